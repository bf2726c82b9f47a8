"""The files API for a session whose shared folder is on another node (``swarm``).

``gateway/media/files.py`` keeps every check it makes on one machine (tokens,
``enable_file_transfer``, path syntax, the upload cap, the staging disk and its
507, the scanner and its quarantine); only the folder itself is reached through
the runtime agent's link (:data:`wire.remote.FILES`), where the session user
serves it from inside the pod (``agent_side/files_server.py``). Its answers
become the same problems as on one machine (400, 404, 416, 507); a folder whose
server does not answer is 503, and once the session has ended the folder has
gone with its pod (409: unlike on one machine, nothing is left to list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from gateway.appkeys import CONFIG, MANAGER
from gateway.errors import ProblemError, bad_request, conflict, not_found
from gateway.sessions.agent_link import AgentUnavailable
from gateway.sessions.session import Session, SessionStatus
from wire import remote

__all__ = ["download", "listing", "over_link", "place"]

REMOTE_BACKENDS = ("swarm",)
"""Backends whose pods keep the shared folder on their node."""
_CHUNK = 256 * 1024


def over_link(request: web.Request) -> bool:
    return request.app[CONFIG].backend in REMOTE_BACKENDS


def _path(raw: str) -> str:
    return remote.FILES + "/" + quote(raw, safe="/")


def _ended(session: Session) -> ProblemError | None:
    if session.status is SessionStatus.RUNNING:
        return None
    return conflict("session-not-running",
                    f"session {session.session_id} is {session.status.value}; on the swarm "
                    "backend its shared folder stayed on the node and went with the session",
                    "Session not running")


def _unavailable() -> ProblemError:
    return ProblemError(503, "files-unavailable", "Shared folder unavailable",
                        "the session's shared folder on its node did not answer; try again",
                        headers={"Retry-After": "2"})


def _problem(status: int, data: Any, raw: str) -> ProblemError:
    detail = str(data.get("detail", "")) if isinstance(data, dict) else ""
    if status == 400:
        return bad_request(detail or f"the path {raw!r} is not allowed")
    if status == 404:
        return not_found(detail or f"no file {raw!r} in the shared folder")
    if status == 416:
        size = data.get("size", "*") if isinstance(data, dict) else "*"
        return ProblemError(416, "range-not-satisfiable", "Range not satisfiable",
                            f"the file has {size} bytes", headers={"Content-Range": f"bytes */{size}"})
    if status == 507:
        return ProblemError(507, "insufficient-storage", "Insufficient storage",
                            f"the session's disk on its node has no room for {raw!r}")
    if status == 503:
        return _unavailable()
    return ProblemError(502, "runtime-agent-unavailable", "Runtime agent unavailable",
                        f"the session's runtime agent failed on the shared folder ({status})")


async def listing(request: web.Request, session: Session) -> web.Response:
    ended = _ended(session)
    if ended is not None:
        raise ended
    try:
        reply = await request.app[MANAGER].agent(session).request("GET", remote.FILES, timeout=30)
        data = reply.json()
    except AgentUnavailable as e:
        raise _unavailable() from e
    if reply.status != 200 or not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise _problem(reply.status, data, "")
    return web.json_response({"files": data["files"]}, headers={"Cache-Control": "no-store"})


async def download(request: web.Request, session: Session, raw: str,
                   name: str) -> web.StreamResponse:
    ended = _ended(session)
    if ended is not None:
        raise ended
    manager = request.app[MANAGER]
    agent = manager.agent(session)
    headers = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
    async with agent.open_http(connect_timeout=5) as http:
        try:
            upstream = await http.get(agent.url(_path(raw)), headers=headers,
                                      **agent.request_options)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise _unavailable() from e
        async with upstream:
            if upstream.status not in (200, 206):
                try:
                    data = await upstream.json(content_type=None)
                except (ValueError, aiohttp.ClientError):
                    data = None
                raise _problem(upstream.status, data, raw)
            size = int(upstream.headers.get(remote.FILE_SIZE_HEADER, "0"))
            manager.events.emit(session.session_id, "file", direction="download", path=raw,
                                size=size, status="sent")
            resp = web.StreamResponse(status=upstream.status, headers={
                "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
                "Cache-Control": "no-store"})
            for key in ("Content-Length", "Content-Range"):
                if key in upstream.headers:
                    resp.headers[key] = upstream.headers[key]
            await resp.prepare(request)
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await resp.write(chunk)
            await resp.write_eof()
            return resp


async def place(request: web.Request, session: Session, tmp: Path, raw: str) -> bool:
    """Send the staged (and scanned) upload *tmp* to the pod; True when it replaced a file."""
    agent = request.app[MANAGER].agent(session)

    async def body() -> Any:
        with tmp.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    async with agent.open_http(connect_timeout=5) as http:
        try:
            async with http.put(agent.url(_path(raw)), data=body(),
                                headers={"Content-Length": str(tmp.stat().st_size)},
                                **agent.request_options) as resp:
                try:
                    data = await resp.json(content_type=None)
                except (ValueError, aiohttp.ClientError):
                    data = None
                if resp.status not in (200, 201):
                    raise _problem(resp.status, data, raw)
                return resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise _unavailable() from e
