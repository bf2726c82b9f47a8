"""Per-session event streams: numbered, kept as NDJSON, fanned out to SSE readers.

Each event is ``{"id": n, "ts": RFC 3339, "type": ..., ...}``; ``id`` counts
from 1 per session, so an SSE reader resumes with ``Last-Event-ID``. Events
are appended to ``<session>/logs/events.ndjson`` (kept after the session
ends) and the most recent ones are also held in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from gateway.sessions.session import rfc3339, utcnow

logger = logging.getLogger(__name__)

MEMORY_EVENTS = 1000


class _Stream:
    def __init__(self, path: Path, next_id: int) -> None:
        self.path = path
        self.next_id = next_id
        self.recent: deque[dict[str, Any]] = deque(maxlen=MEMORY_EVENTS)
        self.unwritten: list[dict[str, Any]] = []
        """Events the log could not take (disk full); written before the next one."""
        self.waiters: set[asyncio.Queue[dict[str, Any] | None]] = set()


class EventHub:
    """Emits events and serves them to readers."""

    def __init__(self, log_dir: Callable[[str], Path]) -> None:
        self._log_dir = log_dir
        self._streams: dict[str, _Stream] = {}

    def _stream(self, session_id: str) -> _Stream:
        stream = self._streams.get(session_id)
        if stream is None:
            path = self._log_dir(session_id) / "events.ndjson"
            history = read_ndjson(path)
            stream = _Stream(path, (history[-1]["id"] + 1) if history else 1)
            stream.recent.extend(history[-MEMORY_EVENTS:])
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
        return event

    def history(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        stream = self._stream(session_id)
        if stream.recent and stream.recent[0]["id"] <= after + 1:
            return [e for e in stream.recent if e["id"] > after]
        logged = [e for e in read_ndjson(stream.path) if e["id"] > after]
        # A full disk: the newest events are not in the log yet, only in memory.
        last = logged[-1]["id"] if logged else after
        newer = {e["id"]: e for e in [*stream.unwritten, *stream.recent] if e["id"] > last}
        return logged + [newer[i] for i in sorted(newer)]

    async def follow(self, session_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events after *after*, then live ones until :meth:`close_readers`."""
        stream = self._stream(session_id)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        stream.waiters.add(queue)
        try:
            last = after
            for event in self.history(session_id, after):
                last = event["id"]
                yield event
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
