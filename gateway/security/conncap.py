"""Caps on open connections to the gateway's one port: in all, and per client address.

Every open TCP connection holds a file descriptor of the gateway process (idle
keep-alive ones too, until ``--keepalive-timeout``), so one client opening
thousands of idle connections would starve every session of descriptors.
:class:`CappedAppRunner` serves the app through :class:`CappedServer`, a
:class:`aiohttp.web.Server` that counts connections by client address as aiohttp
reports them (``connection_made``/``connection_lost``):

* a connection over ``max_connections`` (all clients) or
  ``max_connections_per_client`` (its address) is not counted; its first request
  gets a ``503`` problem (``/too-many-connections``, ``Retry-After``) with
  ``Connection: close``, and it is closed after :data:`REFUSED_GRACE_S` if it
  sends none;
* past :data:`REFUSED_PENDING_MAX` such refused connections waiting for their
  request, further ones are closed at once (no HTTP answer is possible then);
* each refusal counts in ``visual_runtime_connections_refused_total{reason}``
  (``/metrics``, :data:`CONNECTIONS`), and a warning is logged at most every
  :data:`LOG_INTERVAL_S` per reason.

The defaults follow the process's file limit, raised to its hard limit at start
(:func:`raise_nofile_limit`); see :func:`default_caps`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.errors import PROBLEM_BASE, problem_response

__all__ = ["CONNECTIONS", "CappedAppRunner", "CappedServer", "ConnectionCaps", "default_caps",
           "raise_nofile_limit"]

logger = logging.getLogger(__name__)

HEADROOM_FDS: Final = 1024
"""Descriptors kept for everything but client connections (sessions' links, logs, pipes)."""
REFUSED_GRACE_S: Final = 2.0
"""How long a refused connection may take to send the request its 503 answers."""
REFUSED_PENDING_MAX: Final = 64
"""Refused connections waiting for their request; more are closed without an answer."""
RETRY_AFTER_S: Final = 5
LOG_INTERVAL_S: Final = 10.0


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:  # e.g. an infinite hard limit over nr_open
            logger.warning("cannot raise the file limit from %s to %s: %s", soft, hard, e)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


def default_caps(nofile: int) -> tuple[int, int]:
    """(max connections, max per client address) for a soft file limit of *nofile*.

    Half of what is left after :data:`HEADROOM_FDS` (a proxied viewer socket needs
    a second descriptor toward its runtime agent), between 64 and 16384; a client
    address gets a quarter of that, between 16 and 256.
    """
    if nofile < 0 or nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    total = max(64, min(16384, (nofile - HEADROOM_FDS) // 2))
    return total, max(16, min(256, total // 4))


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer or "unknown")
    return host[7:] if host.startswith("::ffff:") and "." in host else host


class ConnectionCaps:
    """The caps and the counts, shared by the server and ``/metrics``."""

    def __init__(self, max_connections: int, max_per_client: int) -> None:
        if max_connections < 1 or max_per_client < 1:
            raise ValueError("connection caps must be at least 1")
        self.max_connections = max_connections
        self.max_per_client = min(max_per_client, max_connections)
        self.open: Counter[str] = Counter()
        """Open (admitted) connections by client address."""
        self.refused: Counter[str] = Counter({"total": 0, "per_client": 0})
        self._logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, max_connections: int, max_per_client: int) -> ConnectionCaps:
        """0 for either setting: :func:`default_caps` of the current soft file limit."""
        total, per_client = default_caps(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        return cls(max_connections or total, max_per_client or per_client)

    @property
    def open_total(self) -> int:
        return sum(self.open.values())

    def admit(self, address: str) -> str | None:
        """Count a new connection; or the reason it is over a cap (then not counted)."""
        if self.open_total >= self.max_connections:
            reason = "total"
        elif self.open[address] >= self.max_per_client:
            reason = "per_client"
        else:
            self.open[address] += 1
            return None
        self.refused[reason] += 1
        self._log(reason, address)
        return reason

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def _log(self, reason: str, address: str) -> None:
        now = time.monotonic()
        self._unlogged[reason] += 1
        if now - self._logged.get(reason, -LOG_INTERVAL_S) < LOG_INTERVAL_S:
            return
        self._logged[reason] = now
        cap = self.max_connections if reason == "total" else self.max_per_client
        logger.warning("connection from %s refused: over the %s cap of %d open connections "
                       "(%d refused for it since the last warning; %d open in all)",
                       address, "gateway-wide" if reason == "total" else "per-client", cap,
                       self._unlogged[reason], self.open_total)
        self._unlogged[reason] = 0


CONNECTIONS = web.AppKey("connections", ConnectionCaps)
"""The app's :class:`ConnectionCaps` (set by ``create_app``, read by ``/metrics``)."""

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class CappedServer(web.Server):
    """aiohttp's low-level server with :class:`ConnectionCaps` applied per connection."""

    def __init__(self, caps: ConnectionCaps, handler: Handler, **kwargs: Any) -> None:
        super().__init__(self._guard, **kwargs)
        self._caps = caps
        self._inner = handler
        self._counted: dict[RequestHandler, str] = {}
        self._refused: dict[RequestHandler, str] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        address = _address(transport)
        reason = self._caps.admit(address)
        if reason is None:
            self._counted[handler] = address
        elif len(self._refused) >= REFUSED_PENDING_MAX:
            transport.abort()  # no room even to answer: close without a response
            return
        else:
            self._refused[handler] = reason
            asyncio.get_running_loop().call_later(REFUSED_GRACE_S, transport.close)
        super().connection_made(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        address = self._counted.pop(handler, None)
        if address is not None:
            self._caps.release(address)
        self._refused.pop(handler, None)
        super().connection_lost(handler, exc)

    async def _guard(self, request: web.BaseRequest) -> web.StreamResponse:
        reason = self._refused.get(request.protocol)
        if reason is None:
            return await self._inner(request)
        cap = self._caps.max_connections if reason == "total" else self._caps.max_per_client
        who = "the gateway" if reason == "total" else "this client address"
        response = problem_response(503, {
            "type": PROBLEM_BASE + "too-many-connections", "title": "Too many connections",
            "status": 503, "reason": reason,
            "detail": f"{who} already has {cap} open connections (the cap); close idle "
                      f"ones or retry later"}, {"Retry-After": str(RETRY_AFTER_S)})
        response.force_close()
        return response


class CappedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`CappedServer`."""

    def __init__(self, app: web.Application, caps: ConnectionCaps, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._caps = caps

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # app start-up, the handler's settings
        return CappedServer(self._caps, plain.request_handler,
                            request_factory=plain.request_factory,
                            handler_cancellation=plain.handler_cancellation,
                            loop=asyncio.get_running_loop(), **plain._kwargs)
