"""STUN/TURN servers offered to a viewer (``--ice-server``).

Two places hand them out, both built from :func:`ice_servers_for`:

* the ``201`` of a WHEP offer carries one ``Link: <URL>; rel="ice-server"``
  header per server (with ``username``, ``credential`` and
  ``credential-type="password"`` for TURN), as the WHEP draft and RFC 9725
  (WHIP) section 4.6 describe; players such as ``whip-whep`` read them;
* ``GET /sessions/{id}/info`` lists them as ``ice_servers`` in the shape of
  ``RTCIceServer``, so the viewer page builds its ``RTCPeerConnection`` with
  them before it makes the offer.

The servers are the static ones from the configuration, then the TURN servers
of ``--turn-url`` with a user name and password minted for the viewer that asks
(coturn's REST-API shared secret, :mod:`gateway.security.turn`).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway.appkeys import CONFIG
from gateway.config import IceServer, parse_ice_server
from gateway.security.auth import Principal
from gateway.security.turn import TurnError, mint, read_secret

__all__ = ["ice_servers_for", "link_headers", "rtc_ice_servers"]

logger = logging.getLogger(__name__)


def ice_servers_for(request: web.Request, who: Principal) -> tuple[IceServer, ...]:
    """The ICE servers offered to the viewer *who*: the static ones (checked at start-up
    by the config), then the ``--turn-url`` servers with credentials minted for *who*
    (:mod:`gateway.security.turn`)."""
    config = request.app[CONFIG]
    servers = tuple(parse_ice_server(text) for text in config.ice_servers)
    if config.turn_urls and config.turn_secret_file is not None:
        try:
            secret = read_secret(config.turn_secret_file)
        except TurnError as e:
            logger.warning("no TURN credentials for this viewer: %s", e)
            return servers
        servers += mint(config.turn_urls, secret, who.token_id, config.turn_ttl_s)
    return servers


def link_headers(servers: tuple[IceServer, ...]) -> list[str]:
    """One ``Link`` header value per server (values were checked not to need escaping)."""
    out = []
    for server in servers:
        value = f'<{server.url}>; rel="ice-server"'
        if server.username is not None and server.credential is not None:
            value += (f'; username="{server.username}"; credential="{server.credential}"'
                      '; credential-type="password"')
        out.append(value)
    return out


def rtc_ice_servers(servers: tuple[IceServer, ...]) -> list[dict[str, Any]]:
    """The servers as ``RTCIceServer`` dictionaries (``urls``, ``username``, ``credential``)."""
    out: list[dict[str, Any]] = []
    for server in servers:
        entry: dict[str, Any] = {"urls": [server.url]}
        if server.username is not None:
            entry["username"] = server.username
            entry["credential"] = server.credential
        out.append(entry)
    return out
