"""File transfer: the session's shared folder (``home/Downloads``) over HTTP.

Routes (only when the session has ``enable_file_transfer``, else 404):

* ``GET  /api/visual-sessions/{id}/files`` -> ``{"files": [{"path", "size", "modified"}]}``
* ``PUT  /api/visual-sessions/{id}/files/{path}`` -> uploads the raw body
* ``GET  /api/visual-sessions/{id}/files/{path}`` -> downloads (``Range`` supported)

Who: the API token or the session's ``control`` token; a ``view`` token gets
403 (it may watch, not exchange files). Uploads only while the session is
running (409 otherwise); listing and downloads also after it ended (with the
API token: session tokens stop working when their session ends).

Safety: the shared folder is writable by the sandboxed session user, who may
plant symlinks anywhere in it, so every access walks the path component by
component with ``openat``-style calls and ``O_NOFOLLOW``; a symlink anywhere
on the way is refused (400), as are ``..``, ``.``, empty or absolute segments,
control characters and backslashes. Uploads are streamed (never held whole in
memory) into a staging folder outside the shared folder (on the session's own
disk when it has one, ``gateway.backends.session_disk``: an upload that does not
fit gets 507), capped at ``max_upload_mb`` (413), optionally scanned (``upload_scan_command``; a
non-zero exit moves the file to ``<session>/quarantine`` and answers 422),
chowned to the session user and only then renamed into place. A refused
upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import errno
import functools
import logging
import os
import shlex
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from gateway.appkeys import AUTH, CONFIG, MANAGER
from gateway.backends.session_disk import disk_free, upload_staging_dir
from gateway.errors import ProblemError, bad_request, conflict, forbidden, not_found
from gateway.sessions.session import Session, SessionStatus
from wire import files as listing
from wire.files import open_no_follow

from . import files_remote

__all__ = ["NotARegularFile", "file_io", "open_no_follow", "send_fd", "setup_routes"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK = 1024 * 1024
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
FILE_IO_THREADS = 4
"""Threads of the file I/O pool. Downloads, uploads and listings touch folders the
session controls; on their own pool, whatever they meet (a slow disk, a FIFO) can
hold at most these threads, never the default executor that session start and stop,
the store and everything else share."""
_io_pool: concurrent.futures.ThreadPoolExecutor | None = None


async def file_io(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking file I/O on the gateway's bounded file pool."""
    global _io_pool
    if _io_pool is None:
        _io_pool = concurrent.futures.ThreadPoolExecutor(FILE_IO_THREADS,
                                                         thread_name_prefix="vr-files")
    return await asyncio.get_running_loop().run_in_executor(
        _io_pool, functools.partial(fn, *args, **kwargs))


# --------------------------------------------------------------- paths

def split_path(raw: str) -> list[str]:
    """The segments of a client-given relative path; 400 when it could leave the folder."""
    if not raw:
        raise bad_request("the file path is empty")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise bad_request(f"the file path is longer than {MAX_PATH_BYTES} bytes")
    if raw.startswith("/"):
        raise bad_request(f"absolute paths are not allowed: {raw!r}")
    if "\\" in raw:
        raise bad_request(f"backslashes are not allowed in file paths: {raw!r}")
    parts = raw.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise bad_request(f"the path {raw!r} has an empty, '.' or '..' segment")
        if any(ord(c) < 32 or ord(c) == 127 for c in part):
            raise bad_request(f"the path {raw!r} contains control characters")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise bad_request(f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return parts


def _open_file(root: Path, parts: list[str]) -> int:
    """An fd of a regular file. ``O_NONBLOCK``: opening a FIFO the session planted
    must not wait for a writer (it held a thread for ever); anything but a regular
    file is refused (:class:`NotARegularFile`) before a byte is read."""
    dir_fd = open_no_follow(root, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a unix socket
            raise NotARegularFile(parts[-1]) from None
        raise
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(parts[-1])
    os.set_blocking(fd, True)
    return fd


class NotARegularFile(OSError):
    """A FIFO, socket or device where a file was expected."""


# --------------------------------------------------------------- ranges

def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)`` of a single ``bytes=`` range; None to send everything.

    Raises a 416 problem when the range cannot be satisfied. Malformed or
    multi-part ranges are ignored (RFC 9110 allows answering them with 200).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise _unsatisfiable(size)
            start, end = max(0, size - suffix), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
            if start < 0 or end < 0:
                return None
            if start >= size:
                raise _unsatisfiable(size)
            if end < start:
                return None
            end = min(end, size - 1)
    except ValueError:
        return None
    if start >= size or size == 0:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ProblemError:
    return ProblemError(416, "range-not-satisfiable", "Range not satisfiable",
                        f"the resource has {size} bytes",
                        headers={"Content-Range": f"bytes */{size}"})


async def send_fd(request: web.Request, fd: int, content_type: str,
                  headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Stream the open file *fd* (closed here) with ``Range`` support.

    The ``ETag`` is the file's size and modification time, so it changes while a
    recording grows: ``If-None-Match`` with it answers 304, and a ``Range`` under
    an ``If-Range`` naming another ETag gets the whole file (RFC 9110).
    """
    try:
        st = os.fstat(fd)
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and (
                if_none_match.strip() == "*"
                or etag in (t.strip().removeprefix("W/") for t in if_none_match.split(","))):
            return web.Response(status=304, headers={**(headers or {}), "ETag": etag})
        if_range = request.headers.get("If-Range")
        range_header = request.headers.get("Range")
        if if_range is not None and if_range.strip() != etag:
            range_header = None  # the client's part is of another version: send it all
        rng = parse_range(range_header, size)
        start, end = rng if rng is not None else (0, size - 1)
        length = end - start + 1 if size else 0
        resp = web.StreamResponse(status=206 if rng is not None else 200)
        resp.headers.update(headers or {})
        resp.headers["Content-Type"] = content_type
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Last-Modified"] = _http_date(st.st_mtime)
        resp.headers["ETag"] = etag
        if rng is not None:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        resp.content_length = length
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        offset, remaining = start, length
        while remaining > 0:
            data = await file_io(os.pread, fd, min(CHUNK, remaining), offset)
            if not data:
                break  # the file shrank (finalised under us); the client sees a short body
            await resp.write(data)
            offset += len(data)
            remaining -= len(data)
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)


def _http_date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
        "%a, %d %b %Y %H:%M:%S GMT")


# --------------------------------------------------------------- handlers

def _session_for_files(request: web.Request) -> Session:
    session = request.app[MANAGER].get(request.match_info["session_id"])
    who = request.app[AUTH].session(request, session)
    if not who.may_control:
        raise forbidden("file transfer needs the API token or the session's control token")
    if not session.spec.enable_file_transfer:
        raise not_found(f"file transfer is off for session {session.session_id}")
    return session


def _path_error(raw: str, e: OSError) -> ProblemError:
    if isinstance(e, FileNotFoundError):
        return not_found(f"no file {raw!r} in the shared folder")
    return bad_request(f"the path {raw!r} leads through a symlink or a non-folder")


async def list_files(request: web.Request) -> web.Response:
    session = _session_for_files(request)
    if files_remote.over_link(request):
        return await files_remote.listing(request, session)
    root = request.app[MANAGER].files_dir(session)
    if root.is_symlink():
        raise bad_request("the shared folder has been replaced by a symlink")
    files = await file_io(listing.list_files, root)
    return web.json_response({"files": files}, headers={"Cache-Control": "no-store"})


async def download_file(request: web.Request) -> web.StreamResponse:
    session = _session_for_files(request)
    raw = request.match_info["path"]
    parts = split_path(raw)
    if files_remote.over_link(request):
        return await files_remote.download(request, session, raw, parts[-1].replace('"', ""))
    root = request.app[MANAGER].files_dir(session)
    try:
        fd = await file_io(_open_file, root, parts)
    except NotARegularFile:
        raise not_found(f"{raw!r} is not a regular file") from None
    except OSError as e:
        raise _path_error(raw, e) from None
    size = os.fstat(fd).st_size
    request.app[MANAGER].events.emit(session.session_id, "file", direction="download",
                                     path=raw, size=size, status="sent")
    name = parts[-1].replace('"', "")
    return await send_fd(request, fd, "application/octet-stream", {
        "Content-Disposition": f"attachment; filename*=UTF-8''{_quote(name)}",
        "Cache-Control": "no-store"})


def _quote(name: str) -> str:
    from urllib.parse import quote
    return quote(name, safe="")


async def upload_file(request: web.Request) -> web.Response:
    session = _session_for_files(request)
    manager, config = request.app[MANAGER], request.app[CONFIG]
    sid = session.session_id
    if session.status is not SessionStatus.RUNNING:
        raise conflict("session-not-running",
                       f"session {sid} is {session.status.value}; uploads need a running "
                       "session (downloads still work)", "Session not running")
    raw = request.match_info["path"]
    parts = split_path(raw)
    limit = config.max_upload_mb * 1024 * 1024
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(config.max_upload_mb)
    root = manager.files_dir(session)
    uid = session.pod.get("uid_app")
    owner = uid if isinstance(uid, int) else None
    # The parent must already be a real folder chain (or creatable) before we read a byte.
    try:
        parent_fd = await file_io(open_no_follow, root, parts[:-1])
        os.close(parent_fd)
    except FileNotFoundError:
        pass  # created after the body arrived
    except OSError as e:
        raise _path_error(raw, e) from None

    # On the session's own disk when it has one: its quota applies, a full disk is 507.
    staging = upload_staging_dir(manager.session_dir(session))
    free = await file_io(disk_free, manager.session_dir(session))
    if free is not None and request.content_length is not None \
            and request.content_length > free[0]:
        raise _disk_full(raw, free[0])
    await file_io(staging.mkdir, mode=0o700, exist_ok=True)
    tmp = staging / uuid.uuid4().hex
    fd = await file_io(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                 | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    size = 0
    done = False
    try:
        buf = bytearray()
        async for chunk in request.content.iter_chunked(256 * 1024):
            size += len(chunk)
            if size > limit:
                raise _too_large(config.max_upload_mb)
            buf += chunk
            if len(buf) >= CHUNK:
                await _write_or_507(fd, bytes(buf), raw)
                buf.clear()
        if buf:
            await _write_or_507(fd, bytes(buf), raw)
        if owner is not None:
            os.fchown(fd, owner, owner)
        os.close(fd)
        fd = -1
        if config.upload_scan_command:
            ok, detail = await _scan(config.upload_scan_command, tmp,
                                     config.upload_scan_timeout_s, sid)
            if not ok:
                quarantine = manager.session_dir(session) / "quarantine"
                await file_io(quarantine.mkdir, mode=0o700, exist_ok=True)
                dest = quarantine / f"{uuid.uuid4().hex[:8]}-{parts[-1]}"
                # moved off the session's disk (the quarantine outlives it): a copy
                await file_io(shutil.move, tmp, dest)
                done = True
                logger.warning("session %s: upload %r quarantined: %s", sid, raw, detail)
                manager.events.emit(sid, "file", direction="upload", path=raw, size=size,
                                    status="quarantined")
                raise ProblemError(422, "upload-quarantined", "Upload quarantined",
                                   f"the scanner refused {raw!r}; it was not stored "
                                   "in the shared folder")
        if files_remote.over_link(request):  # the folder is in the pod, on its node
            existed = await files_remote.place(request, session, tmp, raw)
            await file_io(tmp.unlink)
        else:
            try:
                existed = await file_io(_place, tmp, root, parts, owner)
            except OSError as e:
                if e.errno in _NO_SPACE:  # a new folder on the way did not fit
                    raise _disk_full(raw, None) from None
                raise _path_error(raw, e) from None
        done = True
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                tmp.unlink()
    manager.events.emit(sid, "file", direction="upload", path=raw, size=size, status="stored")
    logger.info("session %s: upload %r stored (%d bytes)", sid, raw, size)
    return web.json_response(
        {"path": raw, "size": size,
         "modified": listing.rfc3339(datetime.datetime.now().timestamp())},
        status=200 if existed else 201,
        headers={"Location": f"/api/visual-sessions/{sid}/files/{raw}"})


def _too_large(limit_mb: int) -> ProblemError:
    return ProblemError(413, "payload-too-large", "Payload too large",
                        f"uploads are limited to {limit_mb} MB")


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(raw: str, available: int | None) -> ProblemError:
    left = "" if available is None else f" ({available // (1024 * 1024)} MiB left)"
    return ProblemError(507, "insufficient-storage", "Session disk full",
                        f"{raw!r} does not fit on the session's disk{left}; nothing was "
                        "stored (free space in the session, or raise --session-disk-mb)")


async def _write_or_507(fd: int, data: bytes, raw: str) -> None:
    try:
        await file_io(_write_all, fd, data)
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise _disk_full(raw, None) from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _place(tmp: Path, root: Path, parts: list[str], owner: int | None) -> bool:
    """Rename the staged file into ``root/parts``; True if it replaced a file."""
    dir_fd = open_no_follow(root, parts[:-1], create_dirs=True, owner=owner)
    try:
        try:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{parts[-1]!r} is a folder")
        # rename() never follows a symlink at the destination: it replaces the link.
        os.rename(tmp, parts[-1], dst_dir_fd=dir_fd)
        return st is not None
    finally:
        os.close(dir_fd)


async def _scan(template: str, path: Path, timeout: float, sid: str) -> tuple[bool, str]:
    argv = [arg.replace("{path}", str(path)) for arg in shlex.split(template)]
    if "{path}" not in template:
        argv.append(str(path))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        logger.error("session %s: upload scanner %r cannot run: %s", sid, argv[0], e)
        return False, f"scanner cannot run: {e}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"scanner timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        return False, f"exit {proc.returncode}: {out.decode(errors='replace')[-200:].strip()}"
    return True, ""


def setup_routes(app: web.Application) -> None:
    """Add this feature's routes to the gateway app."""
    base = "/api/visual-sessions/{session_id}/files"
    app.router.add_get(base, list_files)
    app.router.add_put(base + "/{path:.+}", upload_file)
    app.router.add_get(base + "/{path:.+}", download_file)
