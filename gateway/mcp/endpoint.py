"""MCP over streamable HTTP at ``/mcp``, on the gateway's own port.

The transport is the official MCP Python SDK's session manager (stateful
sessions, SSE answers), an ASGI application served through
:func:`gateway.mcp.asgi.serve_asgi`. Every request first passes the API's own
bearer check (``Authorization: Bearer <API token>``: a missing or wrong token is
the API's 401/403 problem, before the SDK sees the request). The SDK's
DNS-rebinding check stays off: the gateway's Host check
(``gateway.security.hardening``) already guards every path.

The tools call the API over loopback, to the very socket the request came in
on, so they behave exactly as the API does (``https`` is verified against the
gateway's own certificate). Links they return use the host the MCP client used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web
from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from gateway.appkeys import AUTH, CONFIG
from gateway.mcp.asgi import serve_asgi
from gateway.mcp.tools import build_server
from visual_runtime_client import VisualRuntimeClient

__all__ = ["MCP_PATH", "setup_mcp"]

logger = logging.getLogger(__name__)

MCP_PATH: Final = "/mcp"
LOOPBACK_HEADER: Final = b"x-visual-runtime-loopback"
"""Scope header (set here, never taken from the client) with the URL the tools call."""
PUBLIC_HEADER: Final = b"x-visual-runtime-public-base"
"""Scope header with the base URL the MCP client used, for the links tools return."""


@dataclass
class _Mcp:
    api_token: str
    http: aiohttp.ClientSession | None = None
    manager: StreamableHTTPSessionManager | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


MCP_STATE: Final = web.AppKey("mcp_state", _Mcp)


def _loopback_base(request: web.Request) -> str:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        raise web.HTTPServiceUnavailable(text="the MCP endpoint cannot reach its own socket")
    host, port = sock[0], sock[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{request.scheme}://{host}:{port}"


def _provider(state: _Mcp) -> Any:
    @contextlib.asynccontextmanager
    async def provide(ctx: Context[Any, Any]) -> AsyncIterator[tuple[VisualRuntimeClient, str]]:
        headers = ctx.headers or {}
        loopback = headers.get(LOOPBACK_HEADER.decode())
        public = headers.get(PUBLIC_HEADER.decode())
        if not loopback or not public or state.http is None:
            raise RuntimeError("MCP tool called outside an /mcp request")
        client = VisualRuntimeClient(loopback, state.api_token, http=state.http)
        try:
            yield client, public
        finally:
            await client.aclose()
    return provide


async def _handle(request: web.Request) -> web.StreamResponse:
    request.app[AUTH].api(request)
    state = request.app[MCP_STATE]
    if state.manager is None:
        raise web.HTTPServiceUnavailable(text="the MCP server is not running")
    internal = (LOOPBACK_HEADER, PUBLIC_HEADER)
    headers = [(k.lower(), v) for k, v in request.raw_headers if k.lower() not in internal]
    headers.append((LOOPBACK_HEADER, _loopback_base(request).encode("latin-1")))
    headers.append((PUBLIC_HEADER, f"{request.scheme}://{request.host}".encode("latin-1")))
    return await serve_asgi(state.manager.handle_request, request, headers)


def setup_mcp(app: web.Application, api_token: str) -> None:
    """Serve MCP at :data:`MCP_PATH` (GET, POST and DELETE, as the transport needs)."""
    state = _Mcp(api_token)
    app[MCP_STATE] = state

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        connector = None
        if config.tls_cert is not None:
            context = ssl.create_default_context(cafile=str(config.tls_cert))
            context.check_hostname = False  # loopback address, our own certificate
            connector = aiohttp.TCPConnector(ssl=context)
        state.http = aiohttp.ClientSession(connector=connector)
        server = build_server(_provider(state))
        # the SDK's public way to get its transport: build its app, take the session
        # manager (the Starlette app around it is not used)
        server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        state.manager = server.session_manager
        started = asyncio.Event()
        manager = state.manager

        async def run() -> None:
            async with manager.run():
                started.set()
                await state.stop.wait()

        state.task = asyncio.create_task(run(), name="mcp-session-manager")
        await started.wait()
        try:
            yield
        finally:
            state.stop.set()
            await state.task
            state.manager = None
            await state.http.close()

    async def on_shutdown(app: web.Application) -> None:
        # end open MCP streams now, so graceful shutdown does not wait on them
        state.stop.set()
        if state.task is not None:
            await state.task

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_route("*", MCP_PATH, _handle)
