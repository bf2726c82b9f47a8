"""Edge protections of the gateway, in one middleware and one response hook.

In request order:

0. **Host** — a ``Host`` that is not one of the gateway's names gets 421
   (DNS rebinding; see :mod:`gateway.security.host`).
1. **Failed-token throttle** — a client address with ``auth_failure_limit``
   failed token attempts (a 401 to a request that carried a token) within
   ``auth_failure_window_s`` gets 429 + ``Retry-After`` for everything but the
   static/ops routes, without its token being looked at.
2. **Origin** — WebSocket upgrades and WHEP ``POST``/``PATCH``/``DELETE`` that
   carry an ``Origin`` must come from the gateway's own origin or
   ``allowed_origins`` (403); see :mod:`gateway.security.origin`.
3. **Body size** — every body but a file upload is at most ``max_body_kb``
   (413, at once when ``Content-Length`` says so).
4. **Session-creation rate** — ``POST /api/visual-sessions`` takes a token
   from a bucket per (client address, API token): ``create_burst`` at once,
   ``create_rate_per_minute`` on average; 429 + ``Retry-After`` beyond.

Every response gets ``X-Content-Type-Options: nosniff``; the viewer pages,
their static files and noVNC also get a Content-Security-Policy
(:mod:`gateway.security.csp`), ``Referrer-Policy: no-referrer`` and, with the default
``frame_ancestors``, ``X-Frame-Options: DENY``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import hdrs, web

from gateway.appkeys import AUTH, CONFIG
from gateway.config import WEB_DIR, GatewayConfig
from gateway.errors import ProblemError, forbidden, not_found
from gateway.security.cors import frame_ancestors
from gateway.security.csp import viewer_policy
from gateway.security.host import allowed_host_names, host_allowed
from gateway.security.origin import origin_allowed
from gateway.security.throttle import AuthThrottle, TokenBucket, retry_after_header

__all__ = ["HARDENING", "Hardening", "hardening_middleware", "setup_hardening"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSIONS = "/api/visual-sessions"
_UPLOAD = SESSIONS + "/{session_id}/files/{path}"
_WHEP = SESSIONS + "/{session_id}/whep"
_WHEP_PEER = SESSIONS + "/{session_id}/whep/{peer_id}"
_PAGES = {"/sessions/{session_id}/": "index.html", "/sessions/{session_id}/vnc/": "vnc.html"}
_UNTHROTTLED = frozenset({"/healthz", "/metrics", "/api/openapi.json"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Hardening:
    """The gateway's rate-limit state (one per app)."""

    auth: AuthThrottle
    creates: TokenBucket
    hosts: frozenset[str] | None = None
    """Host names served (None: any)."""

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Hardening:
        return cls(AuthThrottle(config.auth_failure_limit, config.auth_failure_window_s),
                   TokenBucket(config.create_rate_per_minute / 60.0, config.create_burst),
                   allowed_host_names(config.host, config.allowed_hosts))


HARDENING = web.AppKey("hardening", Hardening)


def too_many_requests(detail: str, seconds: float) -> ProblemError:
    return ProblemError(429, "too-many-requests", "Too many requests", detail,
                        headers={"Retry-After": retry_after_header(seconds)})


def payload_too_large(limit: int) -> ProblemError:
    return ProblemError(413, "payload-too-large", "Payload too large",
                        f"the request body is larger than {limit} bytes")


def _canonical(request: web.Request) -> str | None:
    """The matched route's pattern (``/api/visual-sessions/{session_id}``), if any."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _presented_token(request: web.Request) -> bool:
    return bool(request.headers.get(hdrs.AUTHORIZATION) or request.query.get("token"))


def _needs_origin_check(request: web.Request, canonical: str | None) -> bool:
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        return True
    return (canonical == _WHEP and request.method == "POST") or (
        canonical == _WHEP_PEER and request.method in ("PATCH", "DELETE"))


async def _check_body(request: web.Request, canonical: str | None, limit: int) -> None:
    if request.method not in _BODY_METHODS or canonical == _UPLOAD:
        return
    length = request.content_length
    if length is not None:
        if length > limit:
            raise payload_too_large(limit)
        return
    if request.body_exists:
        # chunked: read it now (bounded by client_max_size); handlers get the cached bytes
        if len(await request.read()) > limit:
            raise payload_too_large(limit)


def _check_static(request: web.Request) -> None:
    """A missing static file is a 404 problem (aiohttp's own answer is an empty body)."""
    name = request.match_info.get("filename", "")
    root = WEB_DIR.resolve()
    try:
        target = (root / name).resolve()
        missing = not target.exists()
    except (ValueError, OSError):  # NUL bytes, overlong names
        raise not_found("no such viewer file") from None
    if name and target.is_relative_to(root) and missing:
        raise not_found(f"no viewer file {name!r}")


@web.middleware
async def hardening_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[HARDENING]
    config = request.app[CONFIG]
    client = request.remote or "unknown"
    if not host_allowed(request.headers.get(hdrs.HOST), state.hosts):
        logger.warning("refused %s %s for Host %r (client %s; see --allowed-hosts)",
                       request.method, request.path, request.headers.get(hdrs.HOST), client)
        raise ProblemError(421, "misdirected-request", "Misdirected request",
                           "this gateway does not answer for that host name "
                           "(see --allowed-hosts)")
    canonical = _canonical(request)
    if canonical not in _UNTHROTTLED and not request.path.startswith("/viewer/"):
        wait = state.auth.retry_after(client)
        if wait is not None:
            logger.debug("client %s throttled for %.1f s after failed token attempts", client, wait)
            raise too_many_requests("too many requests with invalid tokens from this address; "
                                    "try again later", wait)
    try:
        if _needs_origin_check(request, canonical) and not origin_allowed(
                request, config.allowed_origins):
            logger.warning("refused %s %s from origin %r (client %s)", request.method,
                           request.path, request.headers.get(hdrs.ORIGIN), client)
            raise forbidden("requests from this browser origin are not allowed "
                            "(see --allowed-origins)")
        await _check_body(request, canonical, config.max_body_kb * 1024)
        if request.method == "POST" and canonical == SESSIONS:
            who = request.app[AUTH].api(request)
            wait = state.creates.take(f"{client}|{who.token_id}")
            if wait is not None:
                raise too_many_requests("session creation rate limit reached; try again later",
                                        wait)
        if canonical == "/viewer":
            _check_static(request)
        return await handler(request)
    except ProblemError as e:
        if e.status == 401 and _presented_token(request):
            state.auth.failed(client)
            if state.auth.retry_after(client) is not None:
                logger.warning("client %s throttled: %d failed token attempts within %g s",
                               client, state.auth.limit, state.auth.window_s)
        raise


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    path = request.path
    if not (path.startswith("/sessions/") or path.startswith("/viewer/")):
        return
    config = request.app[CONFIG]
    headers.setdefault("Referrer-Policy", "no-referrer")
    ancestors = frame_ancestors(config)
    if ancestors.strip() == "'none'":
        headers.setdefault("X-Frame-Options", "DENY")
    if hdrs.CONTENT_SECURITY_POLICY not in headers:
        page = _PAGES.get(_canonical(request) or "")
        headers[hdrs.CONTENT_SECURITY_POLICY] = viewer_policy(
            ancestors, WEB_DIR / page if page else None)


_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s\"]*)=([^&;\s\"]*)")


def redact_tokens(message: str) -> str:
    """*message* with the value of every ``token`` query parameter replaced, however
    its name is written: ``?%74oken=`` and ``?t%6Fken=`` decode to ``token`` and are
    accepted as such, so they are redacted as such (and ``TOKEN=`` too)."""
    def one(m: re.Match[str]) -> str:
        if unquote_plus(m.group(2)).strip().casefold() == "token":
            return f"{m.group(1)}{m.group(2)}=REDACTED"
        return m.group(0)
    return _QUERY_PARAM.sub(one, message)


class RedactTokens(logging.Filter):
    """Replaces ``token=<secret>`` in log lines (the access log prints query strings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "=" in message:
            redacted = redact_tokens(message)
            if redacted != message:
                record.msg = redacted
                record.args = None
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("aiohttp.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())


def setup_hardening(app: web.Application, config: GatewayConfig) -> None:
    """State and response hook of the protections (the middleware is added by create_app)."""
    app[HARDENING] = Hardening.from_config(config)
    app.on_response_prepare.append(_security_headers)
    _redact_access_log()
