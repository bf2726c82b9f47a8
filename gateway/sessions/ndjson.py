"""Bounded reads of NDJSON and text logs: the tail, or forward from an event id.

The event log and the runtime agent's and apps' logs of a session can be large
(up to their caps, ``--event-log-max-mb`` and ``--session-log-max-mb``), so
no request reads one whole:

* :func:`tail_lines` reads backwards in blocks until it has the last *limit*
  lines, or *max_bytes* were read;
* :func:`seek_after` finds the first line whose ``"id"`` is above a given id by
  bisecting the byte offsets (the ids of an event log only grow), reading a few
  small blocks;
* :func:`read_lines` reads forward from there, *limit* lines or *max_bytes* at most;
* :func:`lines_backwards` yields lines from the end, one block in memory at a time.

Each works on an open binary file, so a test can count the bytes read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import IO, Any, Final

__all__ = ["BLOCK", "lines_backwards", "parse_events", "read_lines", "seek_after", "tail_lines"]

BLOCK: Final = 64 * 1024
"""Bytes read at a time."""
_ID_PROBE: Final = 4096
"""Bytes read at each bisection step (an event line is far shorter)."""


def _size(f: IO[bytes]) -> int:
    return f.seek(0, os.SEEK_END)


def tail_lines(f: IO[bytes], limit: int, max_bytes: int) -> list[bytes]:
    """The last *limit* complete lines of *f* (oldest first), reading at most about
    *max_bytes* from its end (fewer lines if they are longer than that in all)."""
    if limit <= 0:
        return []
    end = _size(f)
    pos = end
    buf = b""
    read = 0
    while pos > 0 and buf.count(b"\n") <= limit and read < max_bytes:
        step = min(BLOCK, pos, max_bytes - read)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        read += step
    lines = buf.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first one is cut
    return [line for line in lines if line.strip()][-limit:]


def _line_id(line: bytes) -> int | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), int):
        return int(value["id"])
    return None


def _next_line(f: IO[bytes], pos: int, end: int) -> tuple[int, bytes]:
    """(offset past it, the line) of the line that starts at *pos*."""
    f.seek(pos)
    parts = []
    while pos < end:
        chunk = f.read(min(_ID_PROBE, end - pos))
        if not chunk:
            break
        nl = chunk.find(b"\n")
        if nl >= 0:
            parts.append(chunk[:nl])
            return pos + nl + 1, b"".join(parts)
        parts.append(chunk)
        pos += len(chunk)
    return end, b"".join(parts)


def _first_id_from(f: IO[bytes], pos: int, before: int, end: int) -> tuple[int, int] | None:
    """(offset, id) of the first line with an id that starts in [*pos*, *before*)."""
    if pos > 0:
        f.seek(pos - 1)
        if f.read(1) != b"\n":
            pos, _ = _next_line(f, pos, end)  # inside a line: skip the rest of it
    while pos < before:
        after_line, line = _next_line(f, pos, end)
        value = _line_id(line)
        if value is not None:
            return pos, value
        pos = after_line
    return None


def seek_after(f: IO[bytes], after: int) -> int:
    """Byte offset of the first line of the event log *f* whose id is above *after*
    (its size if there is none); reads O(log size) small blocks.

    Invariant: every line starting before ``lo`` has an id up to *after*, and the
    answer is at most ``hi`` (a line start with a greater id, or the end).
    """
    end = _size(f)
    lo, hi = 0, end
    while lo < hi:
        mid = (lo + hi) // 2
        found = _first_id_from(f, mid, hi, end)
        if found is None:
            found = _first_id_from(f, lo, hi, end)  # the lines in [lo, hi) start before mid
            if found is None:
                return hi
        offset, value = found
        if value > after:
            if offset == lo:
                return lo
            hi = offset
        else:
            lo, _ = _next_line(f, offset, end)
    return lo


def read_lines(f: IO[bytes], offset: int, limit: int, max_bytes: int) -> list[bytes]:
    """Up to *limit* complete lines from *offset*, reading at most about *max_bytes*."""
    f.seek(offset)
    lines: list[bytes] = []
    buf = b""
    read = 0
    while len(lines) < limit and read < max_bytes:
        chunk = f.read(min(BLOCK, max_bytes - read))
        if not chunk:
            break
        read += len(chunk)
        buf += chunk
        *complete, buf = buf.split(b"\n")
        lines += [line for line in complete if line.strip()]
    return lines[:limit]


def parse_events(lines: list[bytes]) -> list[dict[str, Any]]:
    """The JSON objects among *lines* (damaged lines are skipped)."""
    events = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


def lines_backwards(f: IO[bytes], max_bytes: int) -> Iterator[bytes]:
    """The lines of *f* from its last one backwards, reading at most about *max_bytes*
    from its end (a block at a time: memory stays one block and one line)."""
    pos = _size(f)
    rest = b""
    read = 0
    while pos > 0 and read < max_bytes:
        step = min(BLOCK, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + rest
        read += step
        lines = buf.split(b"\n")
        rest = lines[0]
        for line in reversed(lines[1:]):
            if line.strip():
                yield line
    if pos == 0 and rest.strip():
        yield rest
