"""The MCP tools over stdio, for desktop MCP clients (``visual-runtime mcp``).

The process talks MCP on stdin/stdout and calls a gateway's API with its API
token, so one gateway serves any number of desktop clients. Logs go to stderr.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.mcpserver import Context

from gateway.mcp.tools import build_server
from visual_runtime_client import VisualRuntimeClient

__all__ = ["serve_stdio"]


async def serve_stdio(url: str, token: str) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    base = url.rstrip("/")
    async with VisualRuntimeClient(base, token) as client:

        @contextlib.asynccontextmanager
        async def provide(ctx: Context[Any, Any]) -> AsyncIterator[tuple[VisualRuntimeClient, str]]:
            yield client, base

        await build_server(provide).run_stdio_async()
