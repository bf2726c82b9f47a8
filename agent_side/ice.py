"""Which host addresses the runtime agent offers viewers as ICE candidates.

The runtime agent of the ``local`` backend runs in the host's network
namespace, where every egress session adds the host end of its veth pair
(``vrh<slot>``, an address in 10.231.0.0/16) and the docker backend adds its
bridges (``vrd...``). aioice gathers a host candidate on every interface, so
without a filter each answer listed the private link address of every other
live session (seen in the 10-session load test: ten 10.231.0.x candidates per
answer, ~140 extra connectivity-check pairs per viewer), and a viewer on the
same machine could nominate a pair on a link that disappears when that other
session stops (the peer then dies when ICE consent expires, 30 s later).

:func:`restrict_host_candidates` makes aioice skip interfaces whose name
starts with one of :data:`EXCLUDED_PREFIXES`. It patches
``aioice.ice.get_host_addresses``, the one function aioice 1.x gathers host
addresses with, for this process only (one runtime agent per session).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import aioice.ice
import ifaddr

__all__ = ["EXCLUDED_PREFIXES", "host_addresses", "restrict_host_candidates",
           "set_advertised_addresses"]

logger = logging.getLogger(__name__)

EXCLUDED_PREFIXES: Final = ("vrh", "vrs", "vrd")
"""Visual Runtime's own links: egress veths (``vrh``/``vrs``) and docker-backend bridges."""

_advertised: frozenset[str] = frozenset()
"""When not empty, the only host addresses offered (the node's reachable ones, set by
the gateway over the remote link: :func:`set_advertised_addresses`)."""


def set_advertised_addresses(addresses: Iterable[str]) -> bool:
    """Offer only *addresses* (of this machine) as host candidates from now on; an empty
    list offers every address again. True when the set changed."""
    global _advertised
    new = frozenset(a.strip() for a in addresses if a.strip())
    changed = new != _advertised
    _advertised = new
    return changed


def host_addresses(use_ipv4: bool, use_ipv6: bool,
                   adapters: Iterable[Any] | None = None,
                   excluded: tuple[str, ...] = EXCLUDED_PREFIXES) -> list[str]:
    """``aioice.ice.get_host_addresses`` without the interfaces named ``excluded*``.

    Same rules as aioice otherwise: no 127.0.0.1, IPv6 only with scope id 0.
    """
    addresses: list[str] = []
    for adapter in ifaddr.get_adapters() if adapters is None else adapters:
        if str(adapter.nice_name).startswith(excluded):
            continue
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                if use_ipv4 and ip.ip != "127.0.0.1":
                    addresses.append(ip.ip)
            elif use_ipv6 and ip.ip[0] != "::1" and ip.ip[2] == 0:
                addresses.append(ip.ip[0])
    if _advertised:
        addresses = [a for a in addresses if a in _advertised]
    return addresses


def restrict_host_candidates(session_id: str = "-") -> Callable[[bool, bool], list[str]]:
    """Install :func:`host_addresses` into aioice (idempotent); returns the original."""
    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(original, "__module__", "") != __name__:
        aioice.ice.get_host_addresses = host_addresses
        logger.info("session %s: ICE host candidates skip interfaces %s*", session_id,
                    "*, ".join(EXCLUDED_PREFIXES))
    return original
