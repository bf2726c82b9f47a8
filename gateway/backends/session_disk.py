"""A size-limited filesystem per session: a sparse ext4 image, loop-mounted.

Without it a session's HOME and shared folder sit on the state filesystem, and
``fallocate -l 50G`` in the xterm (or an endless download) fills the host's
disk. With ``session_disk_mb`` > 0 the ``local`` and ``docker`` backends give
every pod its own filesystem of that size, laid out as::

    <session>/disk.img        sparse image (host blocks only for what is written)
    <session>/disk/           its mount (loop, nosuid, nodev), root-owned
    <session>/disk/user/      the session's HOME (owned by the session user)
    <session>/disk/staging/   upload staging of the files API (root only, 0700)
    <session>/home -> disk/user

``home`` is a symlink so that every path the backends and the files API use
(``home/Downloads`` above all) lands on the session's filesystem, and so that
the files API's staging folder and the shared folder share one mount (a rename
between them is not a copy). At stop (:func:`release_disk`) the shared folder
is copied out to a real ``home/Downloads`` (downloads keep working after the
session ended: folders and regular files, data extents only, so a sparse file
stays sparse; symlinks and special files are left out), then the image is
unmounted (its loop device goes with it: ``mount -o loop`` sets autoclear) and
deleted. Every step runs even when an earlier one failed, so a full disk never
leaves a half-done stop.

Why an image and not a tmpfs: tmpfs pages are memory, charged to whoever
writes them, so a full tmpfs is an OOM kill rather than ``ENOSPC``, and a
2 GiB quota would reserve 2 GiB of RAM per session. Making and mounting a
2 GiB disk (``mkfs.ext4`` without a journal, lazy inode tables) costs tens of
milliseconds at pod start (a warm-pool claim nothing), ~1 MB of host disk when
empty; the figures measured are in docs/operations.md ("Session disk").
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Final

from ..errors import BackendError

__all__ = ["DiskWatch", "check_support", "create_disk", "disk_free", "disk_mounted",
           "release_disk", "upload_staging_dir"]

logger = logging.getLogger(__name__)

IMAGE: Final = "disk.img"
MOUNT: Final = "disk"
HOME_IN_DISK: Final = "user"
STAGING_IN_DISK: Final = "staging"
KEPT: Final = ".downloads-kept"
MIN_MB: Final = 16
"""The smallest session disk (ext4 with its metadata needs a few MiB)."""
FULL_MARGIN_BYTES: Final = 1024 * 1024
"""A session disk with less than this (or 1 %) available counts as full."""
_MKFS: Final = ("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-L", "vr-session",
                "-E", "root_owner=0:0,lazy_itable_init=1,nodiscard")


def check_support() -> str | None:
    """Why this process cannot give sessions their own disk, or None when it can."""
    if os.geteuid() != 0:
        return "the gateway is not root (mounting a session's disk image needs root)"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install e2fsprogs mount)"
    if not Path("/dev/loop-control").exists():
        return "/dev/loop-control is missing (no loop devices: modprobe loop)"
    try:
        caps = int(next(line.split()[1] for line in Path("/proc/self/status").read_text()
                        .splitlines() if line.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        caps = 0
    if not caps & (1 << 21):  # CAP_SYS_ADMIN
        return "the gateway lacks CAP_SYS_ADMIN (needed to mount a session's disk image)"
    return None


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace").strip()[-400:]
        raise BackendError(f"{argv[0]} failed ({proc.returncode}): {out}")


def create_disk(session_dir: Path, size_mb: int, uid: int) -> float:
    """Make, mount and lay out the session's disk (nothing when *size_mb* is 0); the
    milliseconds it took (the ``disk`` start-up span).

    Whatever a failed attempt made is removed before the error is raised."""
    if size_mb <= 0:
        return 0.0
    t0 = time.monotonic()
    session_dir.mkdir(parents=True, exist_ok=True)
    release_disk(session_dir)  # a leftover of a crashed start
    home = session_dir / "home"
    if home.is_dir() and not home.is_symlink():
        home.rmdir()  # an empty folder of an earlier attempt; OSError if it holds anything
    image, mount = session_dir / IMAGE, session_dir / MOUNT
    try:
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.ftruncate(fd, size_mb * 1024 * 1024)
        finally:
            os.close(fd)
        _run(*_MKFS, str(image))
        mount.mkdir(mode=0o755)
        _run("mount", "-t", "ext4", "-o", "loop,nosuid,nodev", str(image), str(mount))
        mount.chmod(0o755)
        user = mount / HOME_IN_DISK
        user.mkdir()
        os.chown(user, uid, uid)
        (mount / STAGING_IN_DISK).mkdir(mode=0o700)
        home.symlink_to(Path(MOUNT) / HOME_IN_DISK)
    except BaseException:
        release_disk(session_dir)
        raise
    return (time.monotonic() - t0) * 1000


def disk_mounted(session_dir: Path) -> bool:
    return os.path.ismount(session_dir / MOUNT)


def disk_free(session_dir: Path) -> tuple[int, int] | None:
    """(bytes available, total bytes) of the session's disk, None when it has none."""
    if not disk_mounted(session_dir):
        return None
    st = os.statvfs(session_dir / MOUNT)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def upload_staging_dir(session_dir: Path) -> Path:
    """Where the files API stages uploads: on the session's disk when it has one (the
    quota applies, and the final rename stays on one filesystem)."""
    if disk_mounted(session_dir):
        return session_dir / MOUNT / STAGING_IN_DISK
    return session_dir / "upload-staging"


class DiskWatch:
    """Counts the times each session's disk became full (``resource_limit`` kind ``disk``)."""

    def __init__(self) -> None:
        self._full: dict[str, bool] = {}
        self._count: dict[str, int] = {}

    def events(self, session_id: str, session_dir: Path) -> dict[str, int]:
        try:
            free = disk_free(session_dir)
        except OSError:
            free = None
        if free is None:  # no disk (any more): forget the session after this answer
            self._full.pop(session_id, None)
            count = self._count.pop(session_id, 0)
            return {"disk": count} if count else {}
        available, total = free
        full = available < max(FULL_MARGIN_BYTES, total // 100)
        if full and not self._full.get(session_id, False):
            self._count[session_id] = self._count.get(session_id, 0) + 1
        self._full[session_id] = full
        count = self._count.get(session_id, 0)
        return {"disk": count} if count else {}


# ------------------------------------------------------------------ release

def release_disk(session_dir: Path) -> None:
    """Keep the shared folder, unmount and delete the session's disk. Idempotent; each
    step runs even if the one before failed (errors are logged, never raised)."""
    home, mount = session_dir / "home", session_dir / MOUNT
    mounted = disk_mounted(session_dir)
    kept = session_dir / KEPT
    if mounted and home.is_symlink():
        shutil.rmtree(kept, ignore_errors=True)
        try:
            _copy_tree(mount / HOME_IN_DISK / "Downloads", kept)
        except OSError as e:
            logger.error("%s: the shared folder could not be kept (%s); its files are lost",
                         session_dir.name, e)
    if home.is_symlink():
        home.unlink()
    if mounted:
        _unmount(mount)
    if kept.exists() or (session_dir / MOUNT).exists() or (session_dir / IMAGE).exists():
        with _logged(session_dir, "making the home folder"):
            home.mkdir(exist_ok=True)
        if kept.is_dir() and not (home / "Downloads").exists():
            try:
                kept.rename(home / "Downloads")
            except OSError as e:
                logger.error("%s: keeping the shared folder failed: %s", session_dir.name, e)
        shutil.rmtree(kept, ignore_errors=True)
        with _logged(session_dir, "making an empty shared folder"):
            (home / "Downloads").mkdir(exist_ok=True)  # the files API lists it after the end
    if not disk_mounted(session_dir):
        with _logged(session_dir, "removing the disk's mount point"):
            if mount.is_dir():
                mount.rmdir()
    with _logged(session_dir, "deleting the disk image"):
        (session_dir / IMAGE).unlink(missing_ok=True)


class _logged:
    def __init__(self, session_dir: Path, what: str) -> None:
        self._where, self._what = session_dir.name, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        if isinstance(error, OSError):
            logger.error("%s: %s failed: %s", self._where, self._what, error)
            return True
        return False


def _unmount(mount: Path) -> None:
    """Unmount; on EBUSY (a download still reading) retry briefly, then detach lazily:
    the loop device goes once the last file is closed."""
    for attempt in range(10):
        proc = subprocess.run(["umount", str(mount)], stdin=subprocess.DEVNULL,
                              capture_output=True, check=False)
        if proc.returncode == 0 or not os.path.ismount(mount):
            return
        time.sleep(0.05 * (attempt + 1))
    logger.warning("%s busy; detaching it lazily", mount)
    subprocess.run(["umount", "-l", str(mount)], stdin=subprocess.DEVNULL,
                   capture_output=True, check=False)


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy the folders and regular files under *src* to *dst* (symlinks and special
    files are left out; nothing is followed). The session's processes are gone by now."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        src_fd = os.open(src, flags | os.O_DIRECTORY)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return  # no shared folder (or the session replaced it by something else)
        raise
    try:
        _copy_dir(src_fd, dst)
    finally:
        os.close(src_fd)


MAX_DEPTH: Final = 32
"""Folders nested deeper than this in the shared folder are not kept (each level holds
a file descriptor while it is copied)."""


def _copy_dir(src_fd: int, dst: Path, depth: int = 0) -> None:
    dst.mkdir(mode=0o755)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    for name in os.listdir(src_fd):
        st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if depth >= MAX_DEPTH:
                logger.warning("%s: not keeping folders nested deeper than %d", dst, MAX_DEPTH)
                continue
            fd = os.open(name, flags | os.O_DIRECTORY, dir_fd=src_fd)
            try:
                _copy_dir(fd, dst / name, depth + 1)
            finally:
                os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(name, flags, dir_fd=src_fd)
            try:
                out = os.open(dst / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              0o644)
                try:
                    _copy_data(fd, out, st.st_size)
                finally:
                    os.close(out)
                os.utime(dst / name, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)


def _copy_data(src: int, dst: int, size: int) -> None:
    """Copy only the data extents of *src* (holes stay holes): a sparse file of a
    terabyte on a 2 GiB session disk must not become a terabyte on the host."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = os.lseek(src, start, os.SEEK_HOLE)
        while start < end:
            chunk = os.pread(src, min(1024 * 1024, end - start), start)
            if not chunk:
                end = start
                break
            written = 0
            while written < len(chunk):
                written += os.pwrite(dst, chunk[written:], start + written)
            start += len(chunk)
        offset = end
    os.ftruncate(dst, size)
