"""The pods' uids come from a range reserved in /etc/subuid and /etc/subgid.

The local backend gives every session two unprivileged uids (app, runtime
agent) from ``uid_base`` up. Those numbers must never belong to anyone else:
``useradd`` hands out subordinate ranges (``user:165536:65536``...) that
rootless containers of ordinary users map, so a pod uid inside one would
share files and signals with that user's containers. The gateway therefore
records its range as ``visual-runtime:<start>:<count>`` in both files on its
first start (and ``useradd`` then skips it), refuses to start when another
entry overlaps it, and ``doctor`` checks the reservation.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["OWNER", "RANGE_SIZE", "SUBID_FILES", "UidRangeError", "check_range", "free_base",
           "pod_range",
           "reserve_range"]

OWNER: Final = "visual-runtime"
RANGE_SIZE: Final = 65536
"""uids reserved: the doctor's probe pair, then two per slot (32767 sessions)."""
SUBID_FILES: Final = (Path("/etc/subuid"), Path("/etc/subgid"))


class UidRangeError(Exception):
    """The pods' range overlaps a range reserved for someone else."""


@dataclass(frozen=True)
class Entry:
    owner: str
    start: int
    count: int

    def overlaps(self, start: int, count: int) -> bool:
        return self.start < start + count and start < self.start + self.count


def pod_range(uid_base: int) -> tuple[int, int]:
    """(start, count) of the range for *uid_base* (the doctor's probe uses the pair below)."""
    return uid_base - 2, RANGE_SIZE


def _entries(path: Path) -> list[Entry]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            entries.append(Entry(fields[0], int(fields[1]), int(fields[2])))
    return entries


def check_range(uid_base: int, files: tuple[Path, ...] = SUBID_FILES) -> list[str]:
    """What is wrong with the reservation of *uid_base*'s range (empty: all good)."""
    start, count = pod_range(uid_base)
    problems = []
    for path in files:
        entries = _entries(path)
        ours = [e for e in entries if e.owner == OWNER and e.start <= start
                and start + count <= e.start + e.count]
        if not ours:
            problems.append(f"{path} has no '{OWNER}:{start}:{count}' entry")
        for e in entries:
            if e.owner != OWNER and e.overlaps(start, count):
                problems.append(f"{path}: uids {start}-{start + count - 1} overlap "
                                f"{e.owner}'s range {e.start}-{e.start + e.count - 1}")
    return problems


def free_base(files: tuple[Path, ...] = SUBID_FILES) -> int:
    """A ``uid_base`` whose range overlaps no entry of *files* (for error messages)."""
    end = max((e.start + e.count for path in files for e in _entries(path)), default=200_000)
    return max(end, 200_000) + 2


def reserve_range(uid_base: int, files: tuple[Path, ...] = SUBID_FILES) -> bool:
    """Make sure *uid_base*'s range is reserved for the pods; True if an entry was added.

    Raises :class:`UidRangeError` when someone else's range overlaps it."""
    start, count = pod_range(uid_base)
    added = False
    for path in files:
        entries = _entries(path)
        clash = [e for e in entries if e.owner != OWNER and e.overlaps(start, count)]
        if clash:
            e = clash[0]
            raise UidRangeError(
                f"the pods' uids {start}-{start + count - 1} (uid_base {uid_base}) overlap "
                f"{e.owner}'s subordinate range {e.start}-{e.start + e.count - 1} in {path}; "
                f"set uid_base to {free_base(files)} (a free range) instead")
        if any(e.owner == OWNER and e.start <= start and start + count <= e.start + e.count
               for e in entries):
            continue
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        _replace(path, text + f"{OWNER}:{start}:{count}\n")
        added = True
    return added


def _replace(path: Path, text: str) -> None:
    """Atomically rewrite *path* (mode 0644 like shadow-utils leaves it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
