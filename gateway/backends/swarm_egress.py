"""``network: "egress"`` for swarm pods: what the pod's launcher is told.

The node's side is ``container/pod-egress.sh``, run by the pod's launcher (the
only part of the pod that keeps CAP_NET_ADMIN, and only for egress sessions): a
veth pair between the node and the app sandbox's network namespace on a /30 of
:data:`SUBNET` (one per slot, as the local backend does with its own range),
and the session's own firewall rules on the node, removed when the pod exits.

The gateway's part is the environment: the slot's addresses and the networks
the sandbox never reaches. Those are ``--egress-deny`` plus every swarm node's
address (the gateway's manager among them: with ``--egress-deny none`` the
sandbox still reaches neither the gateway nor another node's runtime agents),
plus the gateway's own listening address when it is a specific one. The node
the session runs on is out of reach whatever its address (an ``INPUT`` drop for
the session's interface), and so are other sessions on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ..errors import BackendError

SUBNET = ipaddress.ip_network("10.232.0.0/16")
"""Swarm egress links (the local backend's are 10.231.0.0/16)."""
ADDRESS_LABEL = "visual-runtime.address"


def slot_addresses(slot: int) -> tuple[str, str]:
    """(node end, sandbox end) of the slot's /30."""
    base = int(SUBNET.network_address) + slot * 4
    if slot < 0 or base + 3 > int(SUBNET.broadcast_address):
        raise BackendError(f"no swarm egress subnet left for slot {slot}")
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))


def node_addresses(nodes: Iterable[dict[str, Any]]) -> list[str]:
    """Every address swarm knows for its nodes: ``Status.Addr``, the managers'
    ``ManagerStatus.Addr`` and the ``visual-runtime.address`` labels."""
    found: set[str] = set()
    for node in nodes:
        candidates = [node.get("Status", {}).get("Addr", ""),
                      node.get("ManagerStatus", {}).get("Addr", "").rsplit(":", 1)[0],
                      node.get("Spec", {}).get("Labels", {}).get(ADDRESS_LABEL, "")]
        for text in candidates:
            try:
                address = ipaddress.ip_address(text.strip("[]"))
            except ValueError:
                continue
            if address.version == 4 and not address.is_unspecified:
                found.add(str(address))
    return sorted(found, key=ipaddress.ip_address)


def egress_env(slot: int, deny: Iterable[str], nodes: Iterable[dict[str, Any]],
               gateway_host: str = "") -> dict[str, str]:
    """``VR_EGRESS`` and ``VR_EGRESS_DENY`` for the pod's launcher."""
    node_ip, sandbox_ip = slot_addresses(slot)
    networks = [str(ipaddress.ip_network(n, strict=False)) for n in deny]
    networks += [f"{a}/32" for a in node_addresses(nodes)]
    try:
        own = ipaddress.ip_address(gateway_host)
        if own.version == 4 and not (own.is_unspecified or own.is_loopback):
            networks.append(f"{own}/32")
    except ValueError:
        pass  # a host name or "" (all addresses): the node list covers the manager
    unique = list(dict.fromkeys(networks))
    return {"VR_EGRESS": f"{slot} {node_ip} {sandbox_ip}", "VR_EGRESS_DENY": " ".join(unique)}
