"""Caps on what viewers may open in one session: the view-token holder's budget.

A watch link is shared with people who are not trusted to keep the session
alive, so everything a viewer can open costs a bounded amount:

* concurrent viewers per transport (WebRTC peers, WebSocket viewers, noVNC
  connections), over all transports, and per token;
* WHEP offers per minute, per token and per session (each offer costs an
  ICE agent, a DTLS handshake and a subscription even if it never connects).

:class:`ViewerAdmission` is shared by the three transports (wiring in
``__main__``). A refusal raises :class:`ViewerRefused`, which carries the
HTTP status (429 when the caller's own token is over its budget, 503 when the
session is full), a ``Retry-After`` and a reason counted in ``/stats``
(``limits.refused``); the gateway turns it into a problem and an event.
The data-channel size guard is :mod:`agent_side.sctpguard`; ghost peers are
closed by :class:`agent_side.peers.PeerManager` after ``ice_deadline_s``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from .errors import AgentSideError

__all__ = ["REFUSAL_REASONS", "Transport", "ViewerAdmission", "ViewerLimits", "ViewerRefused",
           "ViewerTicket"]

logger = logging.getLogger(__name__)

Transport = Literal["webrtc", "ws", "vnc"]
TRANSPORTS: Final[tuple[Transport, ...]] = ("webrtc", "ws", "vnc")

REFUSAL_REASONS: Final = ("session_viewers", "transport_viewers", "token_viewers",
                          "token_offer_rate", "session_offer_rate")
"""Why a viewer was refused, as counted in ``/stats`` ``limits.refused``."""

FULL_RETRY_AFTER_S: Final = 10
"""``Retry-After`` of a refusal because viewers are at a cap (someone has to leave)."""
MAX_TRACKED_TOKENS: Final = 1024
"""Offer-rate windows kept at most (least recently used forgotten first)."""


@dataclass(frozen=True)
class ViewerLimits:
    """The caps of one session (agent flags; the gateway passes its settings)."""

    max_viewers: int = 24
    """Concurrent viewers over every transport."""
    max_viewers_per_token: int = 6
    """Concurrent viewers opened with one token (view, control or API), any transport."""
    max_webrtc: int = 16
    """Concurrent WebRTC (WHEP) peers."""
    max_ws: int = 16
    """Concurrent WebSocket (WebCodecs) viewers."""
    max_vnc: int = 4
    """Concurrent noVNC connections (each costs x11vnc a full-screen read)."""
    offers_per_minute: int = 20
    """WHEP offers one token may make per minute (a reload is one)."""
    session_offers_per_minute: int = 60
    """WHEP offers per minute over all tokens of the session."""
    datachannel_max_bytes: int = 256 * 1024
    """Largest inbound data-channel message; bigger ones close the peer before
    aiortc reassembles more (:mod:`agent_side.sctpguard`)."""
    ice_deadline_s: float = 20.0
    """A WebRTC peer not connected (ICE and DTLS) this long after its answer is closed."""

    def __post_init__(self) -> None:
        for name in ("max_viewers", "max_viewers_per_token", "max_webrtc", "max_ws", "max_vnc",
                     "offers_per_minute", "session_offers_per_minute"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.datachannel_max_bytes < 1024:
            raise ValueError("datachannel_max_bytes must be >= 1024")
        if self.ice_deadline_s <= 0:
            raise ValueError("ice_deadline_s must be > 0")

    def per_transport(self, transport: Transport) -> int:
        return {"webrtc": self.max_webrtc, "ws": self.max_ws, "vnc": self.max_vnc}[transport]


class ViewerRefused(AgentSideError):
    """A viewer or offer over a cap; answered with ``status`` and ``Retry-After``."""

    def __init__(self, status: int, reason: str, detail: str, retry_after_s: int) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after_s = max(1, retry_after_s)
        super().__init__(detail)

    def body(self) -> dict[str, object]:
        return {"error": "viewer_limit", "reason": self.reason, "detail": self.detail,
                "retry_after_s": self.retry_after_s}


@dataclass(eq=False)
class ViewerTicket:
    """One admitted viewer's place; :meth:`ViewerAdmission.release` gives it back."""

    transport: Transport
    token_id: str
    released: bool = field(default=False)


class _Window:
    """Event times within the last ``span_s`` seconds."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.times: deque[float] = deque()

    def expire(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.span_s:
            self.times.popleft()

    def retry_after(self, now: float) -> int:
        return math.ceil(self.times[0] + self.span_s - now) if self.times else 1


class ViewerAdmission:
    """Counts the session's viewers and offers against :class:`ViewerLimits`."""

    def __init__(self, limits: ViewerLimits | None = None, session_id: str = "", *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or ViewerLimits()
        self._session_id = session_id
        self._clock = clock
        self._open: set[ViewerTicket] = set()
        self._offers = _Window(60.0)
        self._token_offers: OrderedDict[str, _Window] = OrderedDict()
        self.refused: Counter[str] = Counter({reason: 0 for reason in REFUSAL_REASONS})
        """Refusals by reason (:data:`REFUSAL_REASONS`)."""
        self.closed: Counter[str] = Counter({"ghost_peer": 0, "datachannel_oversize": 0})
        """Viewers closed by a guard after they were admitted, by reason."""

    def count(self, transport: Transport | None = None, token_id: str | None = None) -> int:
        return sum(1 for t in self._open
                   if (transport is None or t.transport == transport)
                   and (token_id is None or t.token_id == token_id))

    def admit(self, transport: Transport, token_id: str) -> ViewerTicket:
        """A place for one more viewer, or :class:`ViewerRefused`."""
        limits = self.limits
        if self.count(token_id=token_id) >= limits.max_viewers_per_token:
            self._refuse(429, "token_viewers", f"this token already has "
                         f"{limits.max_viewers_per_token} viewers open in the session",
                         FULL_RETRY_AFTER_S)
        if self.count(transport) >= limits.per_transport(transport):
            self._refuse(503, "transport_viewers", f"the session has its maximum of "
                         f"{limits.per_transport(transport)} {transport} viewers",
                         FULL_RETRY_AFTER_S)
        if self.count() >= limits.max_viewers:
            self._refuse(503, "session_viewers",
                         f"the session has its maximum of {limits.max_viewers} viewers",
                         FULL_RETRY_AFTER_S)
        ticket = ViewerTicket(transport, token_id)
        self._open.add(ticket)
        return ticket

    def release(self, ticket: ViewerTicket) -> None:
        """Idempotent."""
        ticket.released = True
        self._open.discard(ticket)

    def check_offer(self, token_id: str) -> None:
        """Count one WHEP offer, or raise :class:`ViewerRefused` if over the rate."""
        now = self._clock()
        window = self._token_offers.pop(token_id, None) or _Window(60.0)
        self._token_offers[token_id] = window  # most recently used last
        while len(self._token_offers) > MAX_TRACKED_TOKENS:
            self._token_offers.popitem(last=False)
        window.expire(now)
        self._offers.expire(now)
        if len(window.times) >= self.limits.offers_per_minute:
            self._refuse(429, "token_offer_rate", f"more than {self.limits.offers_per_minute} "
                         "offers per minute from this token", window.retry_after(now))
        if len(self._offers.times) >= self.limits.session_offers_per_minute:
            self._refuse(503, "session_offer_rate",
                         f"more than {self.limits.session_offers_per_minute} offers per minute "
                         "in this session", self._offers.retry_after(now))
        window.times.append(now)
        self._offers.times.append(now)

    def note_closed(self, reason: Literal["ghost_peer", "datachannel_oversize"],
                    viewer: str) -> None:
        self.closed[reason] += 1
        logger.warning("session %s: viewer %s closed: %s", self._session_id, viewer,
                       reason.replace("_", " "))

    def _refuse(self, status: int, reason: str, detail: str, retry_after_s: int) -> None:
        self.refused[reason] += 1
        if self.refused[reason] in (1, 10, 100) or self.refused[reason] % 1000 == 0:
            logger.warning("session %s: viewer refused (%s, %d so far): %s",
                           self._session_id, reason, self.refused[reason], detail)
        raise ViewerRefused(status, reason, detail, retry_after_s)

    def stats(self) -> dict[str, object]:
        """For ``/stats``: the caps, who is open, what was refused or closed."""
        return {"refused": dict(self.refused), "closed": dict(self.closed),
                "open": {t: self.count(t) for t in TRANSPORTS},
                "caps": {"max_viewers": self.limits.max_viewers,
                         "max_viewers_per_token": self.limits.max_viewers_per_token,
                         "max_webrtc": self.limits.max_webrtc, "max_ws": self.limits.max_ws,
                         "max_vnc": self.limits.max_vnc,
                         "offers_per_minute": self.limits.offers_per_minute,
                         "session_offers_per_minute": self.limits.session_offers_per_minute,
                         "datachannel_max_bytes": self.limits.datachannel_max_bytes,
                         "ice_deadline_s": self.limits.ice_deadline_s}}
