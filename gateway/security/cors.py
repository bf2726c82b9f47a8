"""Cross-origin access for the configured allowed origins (``--allowed-origins``).

An agent platform that embeds the live view in its own web app calls WHEP and
a few session routes from its own origin. For an origin in
``allowed_origins`` (and only those):

* a CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) to a
  session route gets 204 with ``Access-Control-Allow-Origin`` (that origin),
  ``-Allow-Methods``, ``-Allow-Headers`` (``Authorization``, ``Content-Type``,
  ``If-Match``, ``Last-Event-ID``) and ``-Max-Age``;
* every response of those routes, errors included, carries
  ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers:
  Location, ETag, Retry-After, Link`` (a WHEP client reads ``Location``);
* the viewer pages may be framed by it: :func:`frame_ancestors` adds it to
  the CSP ``frame-ancestors``.

Tokens travel in ``Authorization`` (or ``?token=``), never in cookies, so no
``Access-Control-Allow-Credentials``. Any other origin gets no CORS headers
(its browser then refuses to read the answer) and a preflight from it gets
403. A plain ``OPTIONS`` to the WHEP endpoint (no preflight headers) answers
204 with ``Accept-Post: application/sdp``, as the WHEP draft suggests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web

from gateway.appkeys import CONFIG
from gateway.config import GatewayConfig
from gateway.errors import forbidden
from gateway.security.origin import normalise_origin, own_origin

__all__ = ["allowed", "cors_middleware", "frame_ancestors", "in_scope", "setup_cors"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOW_METHODS: Final = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS: Final = "Authorization, Content-Type, If-Match, Last-Event-ID"
EXPOSE_HEADERS: Final = "Location, ETag, Retry-After, Link"
MAX_AGE_S: Final = 600


def allowed(config: GatewayConfig) -> frozenset[str]:
    """The allowed origins, normalised (``scheme://host[:port]``)."""
    return frozenset(o for o in (normalise_origin(a) for a in config.allowed_origins) if o)


def in_scope(path: str) -> bool:
    """The routes a viewer or dashboard on another origin may call."""
    if path.startswith("/api/visual-sessions/"):
        return True
    return path.startswith("/sessions/") and path.endswith("/info")


def frame_ancestors(config: GatewayConfig) -> str:
    """CSP ``frame-ancestors`` of the viewer pages: ``--frame-ancestors`` when set,
    else ``'self'`` plus the allowed origins, else ``'none'``."""
    if config.frame_ancestors.strip() != "'none'" or not config.allowed_origins:
        return config.frame_ancestors
    return " ".join(("'self'", *sorted(allowed(config))))


def _cross_origin(request: web.Request) -> str | None:
    """The request's ``Origin`` when it is another origin than ours, normalised."""
    raw = request.headers.get(hdrs.ORIGIN)
    if raw is None:
        return None
    origin = normalise_origin(raw)
    if origin is None or origin == own_origin(request):
        return None
    return origin


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method != "OPTIONS" or not in_scope(request.path):
        return await handler(request)
    origin = _cross_origin(request)
    preflight = hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    if preflight and origin is not None:
        if origin not in allowed(request.app[CONFIG]):
            raise forbidden("this origin is not allowed (see --allowed-origins)")
        return web.Response(status=204, headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE_S),
        })
    if request.path.endswith("/whep"):
        return web.Response(status=204, headers={"Accept-Post": "application/sdp",
                                                 hdrs.ALLOW: "POST, OPTIONS"})
    return await handler(request)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not in_scope(request.path):
        return
    origin = _cross_origin(request)
    if origin is None or origin not in allowed(request.app[CONFIG]):
        return
    headers = response.headers
    headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS
    vary = headers.get(hdrs.VARY)
    headers[hdrs.VARY] = f"{vary}, Origin" if vary and "origin" not in vary.lower() else "Origin"


def setup_cors(app: web.Application) -> None:
    """The response hook (the middleware is added by create_app)."""
    app.on_response_prepare.append(_cors_headers)
