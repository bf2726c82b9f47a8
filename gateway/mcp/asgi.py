"""Serve an ASGI application from an aiohttp handler.

The official MCP Python SDK implements streamable HTTP as an ASGI application
(``StreamableHTTPSessionManager.handle_request``); the gateway is aiohttp. This
adapter builds the ASGI ``http`` scope from the aiohttp request, streams the
request body in, and streams the response out as it is produced, so SSE answers
and long tool calls flow through unbuffered. A client that goes away is
reported to the application as ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from aiohttp import web

__all__ = ["ASGIApp", "serve_asgi"]

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[MutableMapping[str, Any]]],
                    Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]

BODY_CHUNK: Final = 64 * 1024
DISCONNECT_POLL_S: Final = 0.5
"""How often a request whose body is read checks that its client is still there."""


async def serve_asgi(app: ASGIApp, request: web.Request,
                     headers: list[tuple[bytes, bytes]] | None = None) -> web.StreamResponse:
    """Run *app* for *request*; ``headers`` replace the request's in the scope."""
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": headers if headers is not None else [(k.lower(), v)
                                                        for k, v in request.raw_headers],
        "client": (request.remote or "", 0),
        "server": (sock[0], sock[1]) if sock else None,
    }
    response: web.StreamResponse | None = None
    body_done = False
    finished = asyncio.Event()

    def gone() -> bool:
        return request.transport is None or request.transport.is_closing()

    async def receive() -> MutableMapping[str, Any]:
        nonlocal body_done
        if not body_done:
            chunk = await request.content.read(BODY_CHUNK)
            more = bool(chunk) and not request.content.at_eof()
            body_done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        while not finished.is_set() and not gone():
            try:
                await asyncio.wait_for(finished.wait(), DISCONNECT_POLL_S)
            except TimeoutError:
                pass
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=int(message["status"]))
            for key, value in message.get("headers", []):
                response.headers.add(key.decode("latin-1"), value.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body":
            if response is None:
                raise RuntimeError("ASGI body before response start")
            data = message.get("body", b"")
            if data:
                await response.write(data)
            if not message.get("more_body", False):
                await response.write_eof()

    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    if response is None:
        raise web.HTTPInternalServerError(text="the MCP transport sent no response")
    return response
