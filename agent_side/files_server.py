"""The shared folder of a swarm pod, served from inside the app sandbox.

On one machine the gateway reads and writes the session's ``Downloads`` folder
itself (``gateway/media/files.py``). In a swarm pod that folder lives in the
pod, on another node, and belongs to the session user; Chromium writes its
downloads there as ``0600``. So the session user serves it: this small server
runs in the app sandbox as uid 10001 (started by ``container/session.sh``), on a
unix socket in a folder of the session user's with the runtime agent's group,
and answers only the agent (``SO_PEERCRED``, as ``container/cdp-relay.py``
does). The agent passes the gateway's file requests on to it
(:mod:`agent_side.files_link`). It can do nothing the session user cannot.

Routes (:data:`wire.remote.FILES`): ``GET /files`` (the listing, as the gateway
gives it), ``GET /files/{path}`` (the bytes; one ``Range: bytes=A-B`` honoured,
206 or 416 with ``size``), ``PUT /files/{path}`` (the body into a new file
beside the target, then renamed over it; 201 new, 200 replaced). Paths are
walked component by component with ``O_NOFOLLOW``: a symlink or a non-folder on
the way is 400, as on one machine. Errors are ``{"error", "detail"}``.

    python -m agent_side.files_server --socket S --root DIR --peer-uid UID
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
import stat
import struct
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from wire import files as listing
from wire import remote

__all__ = ["make_app", "main"]

CHUNK = 256 * 1024
ROOT = web.AppKey("root", Path)
PEER = web.AppKey("peer_uid", int)


def _error(status: int, code: str, detail: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


def _parts(raw: str) -> list[str] | None:
    parts = raw.split("/")
    if not raw or any(p in ("", ".", "..") or "\\" in p or any(ord(c) < 32 for c in p)
                      for p in parts):
        return None
    return parts


def _path_error(raw: str, e: OSError) -> web.Response:
    if isinstance(e, FileNotFoundError):
        return _error(404, "not_found", f"no file {raw!r} in the shared folder")
    return _error(400, "bad_path", f"the path {raw!r} leads through a symlink or a non-folder")


async def list_files(request: web.Request) -> web.Response:
    files = await asyncio.to_thread(listing.list_files, request.app[ROOT])
    return web.json_response({"files": files})


def _open_file(root: Path, parts: list[str]) -> int:
    parent = listing.open_no_follow(root, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=parent)
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file")
    return fd


def _range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(start, end) inclusive, None for the whole file, False when unsatisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if not first:
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size else False
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return (start, end) if start <= end and start < size else False


async def download(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["path"]
    parts = _parts(raw)
    if parts is None:
        return _error(400, "bad_path", f"the path {raw!r} is not a plain relative path")
    try:
        fd = await asyncio.to_thread(_open_file, request.app[ROOT], parts)
    except IsADirectoryError:
        return _error(404, "not_regular", f"{raw!r} is not a regular file")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return _error(400, "bad_path", f"the path {raw!r} is a symlink")
        return _path_error(raw, e)
    try:
        size = os.fstat(fd).st_size
        span = _range(request.headers.get("Range"), size)
        if span is False:
            return _error(416, "unsatisfiable", "the range is outside the file", size=size)
        start, end = span if isinstance(span, tuple) else (0, size - 1)
        resp = web.StreamResponse(status=206 if isinstance(span, tuple) else 200, headers={
            "Content-Length": str(max(0, end - start + 1)), "Accept-Ranges": "bytes",
            remote.FILE_SIZE_HEADER: str(size)})
        if isinstance(span, tuple):
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        await resp.prepare(request)
        offset = start
        while offset <= end:
            data = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset + 1), offset)
            if not data:
                break
            await resp.write(data)
            offset += len(data)
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)


async def upload(request: web.Request) -> web.Response:
    raw = request.match_info["path"]
    parts = _parts(raw)
    if parts is None:
        return _error(400, "bad_path", f"the path {raw!r} is not a plain relative path")
    try:
        parent = await asyncio.to_thread(listing.open_no_follow, request.app[ROOT],
                                         parts[:-1], create_dirs=True)
    except OSError as e:
        return _path_error(raw, e)
    tmp = f".vr-upload-{uuid.uuid4().hex}"
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=parent)
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                await asyncio.to_thread(os.write, fd, chunk)  # a short write raises ENOSPC
                size += len(chunk)
        finally:
            os.close(fd)
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return _error(400, "bad_path", f"{raw!r} exists and is not a regular file")
            existed = True
        except FileNotFoundError:
            existed = False
        os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        tmp = ""
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return _error(507, "disk_full", "the session's disk is full")
        return _path_error(raw, e)
    finally:
        if tmp:
            try:
                os.unlink(tmp, dir_fd=parent)
            except OSError:
                pass
        os.close(parent)
    return web.json_response({"path": raw, "size": size}, status=200 if existed else 201)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def only_the_agent(request: web.Request, handler: Handler) -> web.StreamResponse:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        return _error(403, "forbidden", "no peer")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid != request.app[PEER]:
        return _error(403, "forbidden", "only the runtime agent may use the shared folder")
    return await handler(request)


def make_app(root: Path, peer_uid: int) -> web.Application:
    app = web.Application(middlewares=[only_the_agent], client_max_size=0)
    app[ROOT] = root
    app[PEER] = peer_uid
    app.router.add_get(remote.FILES, list_files)
    app.router.add_get(remote.FILES + "/{path:.+}", download)
    app.router.add_put(remote.FILES + "/{path:.+}", upload)
    return app


async def serve(root: Path, path: Path, peer_uid: int) -> None:
    runner = web.AppRunner(make_app(root, peer_uid), access_log=None)
    await runner.setup()
    path.unlink(missing_ok=True)
    await web.UnixSite(runner, str(path)).start()
    path.chmod(0o660)  # the agent's group (the folder is setgid) and the session user
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m agent_side.files_server")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--peer-uid", type=int, required=True)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(serve(args.root, args.socket, args.peer_uid))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
