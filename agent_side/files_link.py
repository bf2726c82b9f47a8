"""The gateway's file requests, passed on to the shared folder's server in the pod.

In a swarm pod the session user serves its own ``Downloads`` folder on a unix
socket (:mod:`agent_side.files_server`); the runtime agent, the only peer that
server accepts, adds the same routes (:data:`wire.remote.FILES`) to its link and
relays each request and answer, bodies streamed both ways, statuses and errors
unchanged. The gateway keeps its own checks (tokens, sizes, scanning) in front.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
from aiohttp import web

from wire import remote

__all__ = ["add_routes"]

logger = logging.getLogger(__name__)

SOCKET = web.AppKey("files_socket", Path)
_PASSED = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges",
           remote.FILE_SIZE_HEADER)


async def relay(request: web.Request) -> web.StreamResponse:
    path = request.app[SOCKET]
    headers = {k: v for k, v in request.headers.items() if k in ("Range", "Content-Length")}
    data = request.content if request.method == "PUT" else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)),
                                         timeout=timeout) as http, \
                http.request(request.method, "http://files" + request.path_qs, data=data,
                             headers=headers) as upstream:
            resp = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k in _PASSED})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_chunked(256 * 1024):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientConnectionError, OSError) as e:
        logger.warning("the shared folder's server did not answer: %s", e)
        return web.json_response({"error": "files_unavailable",
                                  "detail": "the session's shared folder is not being served"},
                                 status=503)


def add_routes(app: web.Application, socket_path: Path) -> None:
    app[SOCKET] = socket_path
    app.router.add_get(remote.FILES, relay)
    app.router.add_get(remote.FILES + "/{path:.+}", relay)
    app.router.add_put(remote.FILES + "/{path:.+}", relay)
