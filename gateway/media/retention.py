"""Recording retention: which recordings to delete for age and for the disk quota.

Pure planning (:func:`plan`) kept apart from the filesystem work so the rules
are easy to test: recordings of live sessions are never deleted; a recording
of an ended session goes when it is older than the maximum age (counted from
the session's end); then, while the total size of all recordings is over the
quota, the recordings of the ended sessions that ended first go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

__all__ = ["RecordingEntry", "folder_size", "plan"]


@dataclass(frozen=True)
class RecordingEntry:
    """One session's recording folder as retention sees it."""

    session_id: str
    size: int
    """Bytes on disk (every file of the folder)."""
    ended_at: datetime | None
    """When the session ended; None while it is live (never deleted)."""


def plan(entries: list[RecordingEntry], now: datetime, max_age: timedelta | None,
         quota_bytes: int | None) -> list[tuple[str, str]]:
    """``(session_id, reason)`` to delete, oldest ended first; reason ``max_age`` or ``quota``."""
    ended = sorted((e for e in entries if e.ended_at is not None and e.size > 0),
                   key=lambda e: e.ended_at or now)
    doomed: list[tuple[str, str]] = []
    gone: set[str] = set()
    if max_age is not None:
        for e in ended:
            assert e.ended_at is not None
            if now - e.ended_at > max_age:
                doomed.append((e.session_id, "max_age"))
                gone.add(e.session_id)
    if quota_bytes is not None:
        total = sum(e.size for e in entries if e.session_id not in gone)
        for e in ended:
            if total <= quota_bytes:
                break
            if e.session_id in gone:
                continue
            doomed.append((e.session_id, "quota"))
            gone.add(e.session_id)
            total -= e.size
    return doomed


def folder_size(folder: Path) -> int:
    """Total bytes of the regular files directly in *folder* (0 if missing)."""
    total = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    return total
