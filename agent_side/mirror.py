"""Recording and log files served to the gateway over the link (:mod:`wire.remote`).

When the session runs on another node, the gateway copies these files while
the session runs: it lists a folder, then asks for each file from the byte
offset it already has. Only plain file names in the configured folders are
served, never a path, a link or a folder.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from aiohttp import web

from wire import remote

__all__ = ["MIRROR_DIRS", "CHUNK", "add_routes"]

MIRROR_DIRS = web.AppKey("mirror_dirs", dict[str, Path])
CHUNK = 4 * 1024 * 1024
"""Most bytes one request returns; the gateway asks again from the new offset."""


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


def _listing(folder: Path) -> list[dict[str, object]]:
    files = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for entry in entries:
        if not remote.valid_mirror_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            files.append({"name": entry.name, "size": st.st_size})
    return files


def _read(path: Path, offset: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.pread(fd, CHUNK, offset)
    finally:
        os.close(fd)


async def list_files(request: web.Request) -> web.Response:
    folder = request.app[MIRROR_DIRS].get(request.match_info["kind"])
    if folder is None:
        return _error(404, "unknown_folder", "no such mirrored folder")
    return web.json_response(await asyncio.to_thread(_listing, folder))


async def read_file(request: web.Request) -> web.Response:
    folder = request.app[MIRROR_DIRS].get(request.match_info["kind"])
    name = request.match_info["name"]
    if folder is None or not remote.valid_mirror_name(name):
        return _error(404, "unknown_file", "no such mirrored file")
    try:
        offset = int(request.query.get(remote.MIRROR_OFFSET, "0"))
    except ValueError:
        offset = -1
    if offset < 0:
        return _error(400, "bad_offset", "offset must be a non-negative integer")
    data = await asyncio.to_thread(_read, folder / name, offset)
    if data is None:
        return _error(404, "unknown_file", "no such mirrored file")
    return web.Response(body=data, content_type="application/octet-stream")


def add_routes(app: web.Application, folders: dict[str, Path]) -> None:
    """Serve *folders* (kind -> folder, kinds from :data:`wire.remote.MIRROR_KINDS`)."""
    unknown = set(folders) - set(remote.MIRROR_KINDS)
    if unknown:
        raise ValueError(f"unknown mirror folders: {sorted(unknown)}")
    app[MIRROR_DIRS] = dict(folders)
    app.router.add_get(remote.mirror_list("{kind}"), list_files)
    app.router.add_get(remote.mirror_file("{kind}", "{name}"), read_file)
