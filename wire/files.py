"""The files API's folder walk and listing, shared by the gateway and the swarm pod's
file server.

``{"path": "a/b.txt", "size": 12, "modified": "2026-01-01T00:00:00.000Z"}`` per
regular file below the shared folder, sorted by path; symbolic links, FIFOs,
sockets and devices are left out, and nothing below 32 folder levels is listed.
Folders are opened relative to their parent's descriptor with ``O_NOFOLLOW``, so a
link swapped in during the walk is not followed out of the folder.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

MAX_DEPTH = 32
"""Folder levels listed below the shared folder (each level holds a descriptor)."""
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def open_no_follow(root: Path, parts: list[str], *, create_dirs: bool = False,
                   owner: int | None = None) -> int:
    """An fd of the folder ``root/parts...``, refusing symlinks on the way.

    Raises :class:`FileNotFoundError` for a missing component (unless
    *create_dirs*, which creates it, chowned to *owner* when given) and
    :class:`NotADirectoryError` / ``ELOOP`` :class:`OSError` when a component is a
    symlink or not a folder.
    """
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create_dirs:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                if owner is not None:
                    os.fchown(nxt, owner, owner)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def rfc3339(ts: float) -> str:
    """A POSIX time as the API's timestamps: UTC, milliseconds, ``Z``."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def list_files(root: Path) -> list[dict[str, object]]:
    """The listing of *root* (empty when it does not exist)."""
    out: list[dict[str, object]] = []

    def walk(fd: int, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append({"path": prefix + entry.name, "size": st.st_size,
                            "modified": rfc3339(st.st_mtime)})
            elif stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    walk(sub, prefix + entry.name + "/", depth + 1)
                finally:
                    os.close(sub)

    try:
        fd = os.open(root, DIR_FLAGS)
    except FileNotFoundError:
        return out
    try:
        walk(fd, "", 0)
    finally:
        os.close(fd)
    return out
