"""Resource limits a session's app sandbox hit: ``resource_limit`` events and totals.

The backend counts the hits (cgroup ``pids.max`` refusals, OOM kills, the session's
disk becoming full: ``gateway.backends.session_disk``); this module
turns new hits into one event per check and keeps the totals that /metrics shows.
"""

from __future__ import annotations

import logging
from typing import Final

from gateway.backends.base import SessionBackend
from gateway.config import GatewayConfig
from gateway.sessions.events import EventHub
from gateway.sessions.session import Session

__all__ = ["LimitReporter", "describe_hits"]

logger = logging.getLogger(__name__)

_WORDS: Final = {"pids": "{n} forks refused", "memory": "{n} processes OOM-killed",
                 "disk": "full {n} times"}


def describe_hits(hits: dict[str, int]) -> str:
    """``"memory limit (2 processes OOM-killed)"``, joined with "and"."""
    return " and ".join(f"{kind} limit ({_WORDS.get(kind, '{n} times').format(n=n)})"
                        for kind, n in sorted(hits.items()))


class LimitReporter:
    """Reports each session's new limit hits once, and totals them by kind."""

    def __init__(self, config: GatewayConfig, backend: SessionBackend, events: EventHub) -> None:
        self._config = config
        self._backend = backend
        self._events = events
        self._seen: dict[str, dict[str, int]] = {}
        self.hits: dict[str, int] = {"pids": 0, "memory": 0, "disk": 0}
        """Limit hits reported over all sessions, by kind (for /metrics)."""

    async def adopt(self, session: Session) -> None:
        """A re-adopted session: hits while the gateway was down are not reported again."""
        self._seen[session.session_id] = dict(await self._backend.resource_events(session.pod))

    def forget(self, session_id: str) -> None:
        self._seen.pop(session_id, None)

    async def report(self, session: Session) -> dict[str, int]:
        """Emit ``resource_limit`` for every limit hit since the last call; returns this
        session's totals of the kinds hit so far."""
        sid = session.session_id
        counts = await self._backend.resource_events(session.pod)
        seen = self._seen.setdefault(sid, {})
        for kind, count in sorted(counts.items()):
            before = seen.get(kind, 0)
            if count <= before:
                continue
            seen[kind] = count
            self.hits[kind] = self.hits.get(kind, 0) + count - before
            limit = (f"{self._config.session_memory_mb} MiB" if kind == "memory"
                     else f"{self._config.session_disk_mb} MiB" if kind == "disk"
                     else f"{self._backend.pids_limit(self._config.session_pids)} processes")
            self._events.emit(sid, "resource_limit", kind=kind, count=count, new=count - before,
                              limit=limit)
            logger.warning("session %s: %s limit (%s) hit: %s", sid, kind, limit,
                           _WORDS.get(kind, "{n} times").format(n=count))
        return {kind: n for kind, n in seen.items() if n}
