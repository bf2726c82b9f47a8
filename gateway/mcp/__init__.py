"""The MCP server of Visual Runtime (docs/mcp.md).

* :mod:`gateway.mcp.tools`    the tools, built on the API client (``visual_runtime_client``)
* :mod:`gateway.mcp.asgi`     serving an ASGI app (the MCP SDK's transport) from aiohttp
* :mod:`gateway.mcp.endpoint` streamable HTTP at ``/mcp`` on the gateway's port, API-token auth
* :mod:`gateway.mcp.stdio`    the same tools over stdio (``visual-runtime mcp``)
"""

from gateway.mcp.endpoint import MCP_PATH, setup_mcp
from gateway.mcp.stdio import serve_stdio
from gateway.mcp.tools import build_server

__all__ = ["MCP_PATH", "build_server", "serve_stdio", "setup_mcp"]
