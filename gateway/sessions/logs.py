"""A session's process logs (``agent.log``, ``app.log``): bounded growth, bounded reads.

The runtime agent and the apps append to their log themselves (``O_APPEND``,
both backends). :func:`cap_log` keeps each one under a size: past *max_bytes*
its newest half is copied to ``<name>.1.log`` (replacing the one before), the
file is truncated (the writers go on at its new end) and a marker line says
that older lines were dropped. ``GET .../logs`` reads only tails
(:func:`tail_entries`): the newest *limit* entries of the events and both logs,
within a byte budget per entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gateway.sessions.ndjson import parse_events, tail_lines
from gateway.sessions.session import rfc3339, utcnow

logger = logging.getLogger(__name__)

SOURCES: Final = ("agent", "app")
DEFAULT_LIMIT: Final = 5000
MAX_LIMIT: Final = 20000
BYTES_PER_ENTRY: Final = 2048
"""Read budget per entry asked for (lines past it shorten the answer, never grow the read)."""
MARKER: Final = ("[visual-runtime] this log passed {max_bytes} bytes: older lines are in "
                 "{older} (earlier ones were dropped)")


def _rotated(path: Path) -> Path:
    return path.with_suffix(".1" + path.suffix)


def cap_log(path: Path, max_bytes: int) -> bool:
    """Keep *path* under *max_bytes* (see the module doc); True if it was cut now."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size <= max_bytes:
        return False
    keep = max_bytes // 2
    older = _rotated(path)
    try:
        with path.open("rb") as src:
            src.seek(size - keep)
            tail = src.read(keep)
        cut = tail.find(b"\n")
        tail = tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail
        tmp = older.with_suffix(".tmp")
        tmp.write_bytes(tail)
        os.replace(tmp, older)
        with path.open("r+b") as f:
            f.truncate(0)
        with path.open("ab") as f:
            line = f"{rfc3339(utcnow())} {MARKER.format(max_bytes=max_bytes, older=older.name)}\n"
            f.write(line.encode())
    except OSError as e:
        logger.warning("cannot cap %s: %s", path, e)
        return False
    logger.info("%s passed %d bytes: newest half kept in %s", path, max_bytes, older.name)
    return True


def _log_ts(line: str) -> str | None:
    # runtime agent lines start with "YYYY-MM-DD HH:MM:SS,mmm"; markers with RFC 3339
    head = line[:23]
    if len(head) == 23 and head[4] == "-" and head[10] == " " and head[19] == ",":
        return head[:10] + "T" + head[11:19] + "." + head[20:23] + "Z"
    if len(line) > 20 and line[4] == "-" and line[10] == "T":
        return line.split(" ", 1)[0]
    return None


def _tail(paths: tuple[Path, ...], limit: int) -> list[bytes]:
    """The last *limit* lines of the files *paths* taken as one (newest file first)."""
    out: list[bytes] = []
    for path in paths:
        if len(out) >= limit:
            break
        try:
            with path.open("rb") as f:
                want = limit - len(out)
                out = tail_lines(f, want, want * BYTES_PER_ENTRY) + out
        except OSError:
            continue
    return out[-limit:] if limit else []


def tail_entries(logs_dir: Path, limit: int) -> list[dict[str, Any]]:
    """The newest *limit* entries of the session's events and process logs, oldest
    first (events as they are; log lines as ``{"ts", "type": "log", "source", "line"}``)."""
    events_file = logs_dir / "events.ndjson"
    entries = parse_events(_tail((events_file, _rotated(events_file)), limit))
    for source in SOURCES:
        path = logs_dir / f"{source}.log"
        for raw in _tail((path, _rotated(path)), limit):
            line = raw.decode(errors="replace")
            entries.append({"ts": _log_ts(line), "type": "log", "source": source, "line": line})
    entries.sort(key=lambda e: e.get("ts") or "~")
    return entries[-limit:] if limit else []


def to_ndjson(entries: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


CHECK_INTERVAL_S: Final = 10.0


async def watch(logs_dirs: Callable[[], list[Path]], max_bytes: int,
                interval_s: float = CHECK_INTERVAL_S) -> None:
    """Every *interval_s*, :func:`cap_log` the process logs under each of *logs_dirs()*
    (the running sessions'); runs until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        for logs_dir in logs_dirs():
            for source in SOURCES:
                await asyncio.to_thread(cap_log, logs_dir / f"{source}.log", max_bytes)
