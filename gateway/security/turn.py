"""Time-limited TURN credentials, minted per viewer (coturn's REST-API shared secret).

coturn run with ``use-auth-secret`` and ``static-auth-secret=S`` accepts any user
name of the form ``<expiry>:<anything>`` whose password is
``base64(HMAC-SHA1(S, user name))``, until the Unix time ``<expiry>``. The gateway
holds ``S`` (``--turn-secret-file``) and gives each viewer its own user name
(the expiry and a hash of the viewer's token) and password, in the WHEP ``Link``
headers and the viewer page's ``RTCIceServer`` list (:mod:`gateway.http.ice`).
The TURN server never learns a token, and a leaked credential expires on its own
(``--turn-ttl``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from pathlib import Path

from gateway.config import IceServer
from gateway.errors import GatewayError

__all__ = ["TurnError", "mint", "read_secret", "turn_password"]


class TurnError(GatewayError):
    """The TURN secret cannot be read."""


@functools.lru_cache(maxsize=4)
def read_secret(path: Path) -> bytes:
    """The shared secret (the file's first line); read once per gateway process."""
    try:
        secret = path.read_text().strip().encode()
    except OSError as e:
        raise TurnError(f"cannot read the TURN secret {path}: {e}") from e
    if len(secret) < 16:
        raise TurnError(f"the TURN secret in {path} is shorter than 16 characters")
    return secret


def turn_password(secret: bytes, username: str) -> str:
    """coturn's REST-API password for *username*."""
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


def mint(urls: tuple[str, ...], secret: bytes, viewer: str, ttl_s: float,
         now: float | None = None) -> tuple[IceServer, ...]:
    """One :class:`IceServer` per TURN URL, all with the same fresh credentials for
    *viewer* (a stable hash of its token), valid for *ttl_s* seconds."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{viewer[:24] or 'viewer'}"
    password = turn_password(secret, username)
    return tuple(IceServer(url, username, password) for url in urls)
