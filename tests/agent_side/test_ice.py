"""ICE host candidates of the runtime agent skip Visual Runtime's own links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aioice.ice

from agent_side.ice import host_addresses, restrict_host_candidates


@dataclass
class _IP:
    ip: Any


@dataclass
class _Adapter:
    nice_name: str
    ips: list[_IP]


ADAPTERS = [
    _Adapter("lo", [_IP("127.0.0.1"), _IP(("::1", 0, 0))]),
    _Adapter("eth0", [_IP("192.0.2.2"), _IP(("fd00::2", 0, 0)), _IP(("fe80::1", 0, 4))]),
    _Adapter("docker0", [_IP("172.17.0.1")]),
    _Adapter("vrh3", [_IP("10.231.0.13")]),
    _Adapter("vrs3", [_IP("10.231.0.14")]),
    _Adapter("vrd15e260a3ad7", [_IP("192.168.192.1")]),
]


def test_own_links_are_skipped() -> None:
    assert host_addresses(True, False, ADAPTERS) == ["192.0.2.2", "172.17.0.1"]
    assert host_addresses(True, True, ADAPTERS) == ["192.0.2.2", "fd00::2", "172.17.0.1"]
    assert host_addresses(False, True, ADAPTERS) == ["fd00::2"]


def test_same_rules_as_aioice_on_this_machine() -> None:
    """Without our links the result equals aioice's own (this machine's interfaces)."""
    import ifaddr

    real = [a for a in ifaddr.get_adapters() if not a.nice_name.startswith(("vrh", "vrs", "vrd"))]
    original = restrict_host_candidates()
    try:
        ours = host_addresses(True, True, real)
        theirs = [a for a in original(True, True)
                  if a in {ip.ip if isinstance(ip.ip, str) else ip.ip[0]
                           for adapter in real for ip in adapter.ips}]
        assert ours == theirs
        assert aioice.ice.get_host_addresses is host_addresses
        assert restrict_host_candidates() is host_addresses  # idempotent
    finally:
        aioice.ice.get_host_addresses = original


async def test_answer_lists_no_session_link_address(light_gateway: Any) -> None:
    """End to end: an egress session's own veth (10.231.0.0/16) is not a candidate."""
    from tests.webrtc.whep_client import WhepViewer

    session = await light_gateway.create_running()
    assert session["network"] == "egress"
    viewer = WhepViewer(light_gateway, session["session_id"], session["tokens"]["view"])
    try:
        await viewer.connect()
        candidates = [line for line in viewer.answer_sdp.splitlines()
                      if line.startswith("a=candidate")]
        assert candidates, viewer.answer_sdp
        assert not [c for c in candidates if " 10.231." in c], candidates
    finally:
        await viewer.close()
        await light_gateway.stop(session["session_id"])
