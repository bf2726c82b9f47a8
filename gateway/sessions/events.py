"""Per-session event streams: numbered, kept as NDJSON, fanned out to SSE readers.

Each event is ``{"id": n, "ts": RFC 3339, "type": ..., ...}``; ``id`` counts
from 1 per session, so an SSE reader resumes with ``Last-Event-ID``. Events
are appended to ``<session>/logs/events.ndjson`` (kept after the session
ends) and the most recent ones are also held in memory.

The log is bounded: when ``events.ndjson`` passes half of *max_bytes* it becomes
``events.1.ndjson`` (replacing the one before) and a new file starts, so the two
together stay under *max_bytes*. When that drops older events, an
``events_dropped`` event says from which id on they are kept (``first_kept``).
Reads never take a whole file: the id a stream continues from comes from the
file's tail, a resume bisects the file for its id and reads one page
(:data:`PAGE_EVENTS`), and :meth:`EventHub.last` scans backwards within a byte
budget (:mod:`gateway.sessions.ndjson`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

from gateway.sessions.ndjson import lines_backwards, parse_events, read_lines, seek_after, tail_lines
from gateway.sessions.session import rfc3339, utcnow

logger = logging.getLogger(__name__)

MEMORY_EVENTS: Final = 1000
PAGE_EVENTS: Final = 1000
"""Most events one :meth:`EventHub.history` call returns (SSE readers page through)."""
BYTES_PER_EVENT: Final = 16 * 1024
"""Read budget per event asked for (an event line is well under 1 KiB)."""
SCAN_BYTES: Final = 8 * 1024 * 1024
"""Most bytes :meth:`EventHub.last` reads backwards."""
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024


class _Stream:
    def __init__(self, path: Path, next_id: int, size: int) -> None:
        self.path = path
        self.rotated = path.with_suffix(".1.ndjson")
        self.next_id = next_id
        self.size = size
        self.recent: deque[dict[str, Any]] = deque(maxlen=MEMORY_EVENTS)
        self.unwritten: list[dict[str, Any]] = []
        """Events the log could not take (disk full); written before the next one."""
        self.waiters: set[asyncio.Queue[dict[str, Any] | None]] = set()


def _tail(path: Path, limit: int) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as f:
            return parse_events(tail_lines(f, limit, limit * BYTES_PER_EVENT))
    except OSError:
        return []


def _page(path: Path, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to *limit* events of one log file with ids above *after*."""
    try:
        with path.open("rb") as f:
            offset = seek_after(f, after)
            lines = read_lines(f, offset, limit, limit * BYTES_PER_EVENT)
    except OSError:
        return []
    return [e for e in parse_events(lines) if isinstance(e.get("id"), int) and e["id"] > after]


class EventHub:
    """Emits events and serves them to readers."""

    def __init__(self, log_dir: Callable[[str], Path], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._log_dir = log_dir
        self._max_bytes = max_bytes
        self._streams: dict[str, _Stream] = {}

    def _stream(self, session_id: str) -> _Stream:
        stream = self._streams.get(session_id)
        if stream is None:
            path = self._log_dir(session_id) / "events.ndjson"
            tail = _tail(path, MEMORY_EVENTS) or _tail(path.with_suffix(".1.ndjson"),
                                                       MEMORY_EVENTS)
            ids = [e["id"] for e in tail if isinstance(e.get("id"), int)]
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            stream = _Stream(path, max(ids) + 1 if ids else 1, size)
            stream.recent.extend(e for e in tail if isinstance(e.get("id"), int))
            self._streams[session_id] = stream
        return stream

    def emit(self, session_id: str, type_: str, **fields: Any) -> dict[str, Any]:
        stream = self._stream(session_id)
        event = {"id": stream.next_id, "ts": rfc3339(utcnow()), "type": type_, **fields}
        stream.next_id += 1
        stream.recent.append(event)
        pending = [*stream.unwritten, event][-MEMORY_EVENTS:]
        size = None
        try:
            stream.path.parent.mkdir(parents=True, exist_ok=True)
            with stream.path.open("a") as f:
                size = f.tell()
                f.write("".join(json.dumps(e) + "\n" for e in pending))
                stream.size = f.tell()
            stream.unwritten = []
        except OSError as e:
            # A full disk: keep the log whole lines only, and the events for later
            # (SSE readers get them now from memory).
            if size is not None:
                try:
                    os.truncate(stream.path, size)
                except OSError:
                    pass
            if not stream.unwritten:
                logger.warning("session %s: cannot write event log: %s", session_id, e)
            stream.unwritten = pending
        for queue in stream.waiters:
            queue.put_nowait(event)
        if stream.size > self._max_bytes // 2:
            self._rotate(session_id, stream)
        return event

    def _rotate(self, session_id: str, stream: _Stream) -> None:
        """events.ndjson -> events.1.ndjson; an ``events_dropped`` event if that
        replaced older events."""
        dropped = stream.rotated.exists()
        first = _page(stream.path, 0, 1)
        try:
            os.replace(stream.path, stream.rotated)
        except OSError as e:
            logger.warning("session %s: cannot rotate the event log: %s", session_id, e)
            return
        stream.size = 0
        if dropped:
            first_kept = first[0]["id"] if first else stream.next_id
            logger.info("session %s: event log over %d bytes: events before %d dropped",
                        session_id, self._max_bytes, first_kept)
            self.emit(session_id, "events_dropped", first_kept=first_kept,
                      max_bytes=self._max_bytes)

    def history(self, session_id: str, after: int = 0,
                limit: int = PAGE_EVENTS) -> list[dict[str, Any]]:
        """Up to *limit* (at most :data:`PAGE_EVENTS`) events with ids above *after*,
        oldest first."""
        limit = max(0, min(limit, PAGE_EVENTS))
        stream = self._stream(session_id)
        if stream.recent and stream.recent[0]["id"] <= after + 1:
            return [e for e in stream.recent if e["id"] > after][:limit]
        logged: list[dict[str, Any]] = []
        for path in (stream.rotated, stream.path):
            if len(logged) < limit:
                last = logged[-1]["id"] if logged else after
                logged += _page(path, last, limit - len(logged))
        # A full disk: the newest events are not in the log yet, only in memory.
        last = logged[-1]["id"] if logged else after
        newer = {e["id"]: e for e in [*stream.unwritten, *stream.recent] if e["id"] > last}
        return (logged + [newer[i] for i in sorted(newer)])[:limit]

    def last(self, session_id: str, types: set[str], limit: int) -> list[dict[str, Any]]:
        """The newest *limit* events of the given *types* (oldest first), scanning the
        log backwards over at most :data:`SCAN_BYTES`. Safe in a worker thread (it
        only reads)."""
        stream = self._streams.get(session_id)
        unwritten = list(stream.unwritten) if stream is not None else []
        found: list[dict[str, Any]] = [e for e in unwritten if e.get("type") in types]
        budget = SCAN_BYTES
        current = self._log_dir(session_id) / "events.ndjson"
        for path in (current, current.with_suffix(".1.ndjson")):
            if len(found) >= limit or budget <= 0:
                break
            try:
                with path.open("rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    for line in lines_backwards(f, budget):
                        event = parse_events([line])
                        if event and event[0].get("type") in types:
                            found.insert(0, event[0])
                            if len(found) >= limit:
                                break
                    budget -= min(size, budget)
            except OSError:
                continue
        return found[-limit:] if limit else []

    async def follow(self, session_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events after *after* (read a page at a time), then live ones until
        :meth:`close_readers`."""
        stream = self._stream(session_id)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        stream.waiters.add(queue)
        try:
            last = after
            while True:
                page = self.history(session_id, last)
                for event in page:
                    last = event["id"]
                    yield event
                if len(page) < PAGE_EVENTS:
                    break
            while True:
                item = await queue.get()
                if item is None:
                    return
                if item["id"] > last:
                    last = item["id"]
                    yield item
        finally:
            stream.waiters.discard(queue)

    def close_readers(self, session_id: str) -> None:
        stream = self._streams.get(session_id)
        if stream is not None:
            for queue in stream.waiters:
                queue.put_nowait(None)

    def forget(self, session_id: str) -> None:
        self.close_readers(session_id)
        self._streams.pop(session_id, None)


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """Every event of a whole log file (tests and small files only: the gateway's
    own reads are bounded, see :class:`EventHub`)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
