"""Browser ``Origin`` checks for the endpoints a web page could abuse cross-site.

WebSocket upgrades are not covered by CORS, and a WHEP ``POST`` with
``Content-Type: application/sdp`` is not a "simple" request only by accident
of its content type, so both check ``Origin`` themselves: a request that
carries one must come from the gateway's own origin (derived from the
``Host`` header and the connection's scheme) or from a configured allow-list.
Requests without ``Origin`` (aiortc, curl, the Python client) are allowed;
they are not sent by a browser on someone's behalf.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalise_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None if not an origin."""
    value = value.strip()
    if not value or value == "null":
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def own_origin(request: web.Request) -> str | None:
    """The origin a page served by this gateway to *request*'s client would have."""
    return normalise_origin(f"{request.scheme}://{request.host}")


def origin_allowed(request: web.Request, allowed: Iterable[str]) -> bool:
    """True when *request* has no ``Origin`` or one that is ours or allow-listed."""
    raw = request.headers.get("Origin")
    if raw is None:
        return True
    origin = normalise_origin(raw)
    if origin is None:
        return False
    if origin == own_origin(request):
        return True
    return origin in {normalise_origin(a) for a in allowed}
