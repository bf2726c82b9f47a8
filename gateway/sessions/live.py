"""Viewer connections open per session token, so a revoked token loses them at once.

The WebSocket proxies (``/stream``, noVNC, CDP) and every WHEP peer the gateway
negotiated register a closer here under the session and the token id that opened
them (:meth:`LiveConnections.add`). Revoking the token (:meth:`revoke`) closes
each of them; a connection that registers after its token was revoked (it passed
the token check just before) is told so and closes itself. A WHEP peer the
viewer ends on its own is not reported to the gateway: its closer stays until
the session ends (at most :data:`MAX_PER_TOKEN` per token, oldest dropped) and
then only finds the peer gone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from gateway.sessions.session import Session

logger = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[object]]

MAX_PER_TOKEN: Final = 256
"""Closers kept per (session, token); past it the oldest is dropped (its connection has
long been closed in practice: each token has at most a few viewers open at once)."""


class LiveConnections:
    """Closers of open viewer connections, by session and token id."""

    def __init__(self) -> None:
        self._open: dict[str, dict[str, dict[int, Closer]]] = {}
        self._revoked: dict[str, set[str]] = {}
        self._ids = itertools.count(1)

    def add(self, session_id: str, token_id: str, close: Closer) -> Callable[[], None] | None:
        """Register *close*; returns the function that unregisters it (call it when the
        connection ends), or None when the token is already revoked (close it now)."""
        if token_id in self._revoked.get(session_id, ()):
            return None
        closers = self._open.setdefault(session_id, {}).setdefault(token_id, {})
        key = next(self._ids)
        closers[key] = close
        while len(closers) > MAX_PER_TOKEN:
            closers.pop(next(iter(closers)))

        def remove() -> None:
            by_token = self._open.get(session_id, {})
            by_token.get(token_id, {}).pop(key, None)
            if token_id in by_token and not by_token[token_id]:
                del by_token[token_id]

        return remove

    def count(self, session_id: str, token_id: str) -> int:
        return len(self._open.get(session_id, {}).get(token_id, {}))

    async def revoke(self, session_id: str, token_id: str) -> int:
        """Refuse new registrations of *token_id* and close its open connections;
        returns how many closers ran."""
        self._revoked.setdefault(session_id, set()).add(token_id)
        closers = list(self._open.get(session_id, {}).pop(token_id, {}).values())
        results = await asyncio.gather(*(close() for close in closers), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                logger.warning("session %s: closing a revoked token's connection failed: %s",
                               session_id, result)
        return len(closers)

    async def on_stop(self, session: Session) -> None:
        """A stop hook: the session's tokens end with it, so does the bookkeeping."""
        self._open.pop(session.session_id, None)
        self._revoked.pop(session.session_id, None)
