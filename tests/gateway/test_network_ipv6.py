"""IPv6 and egress sessions (local backend): none at all, and dropped if it comes back.

An egress session's namespace is joined to the host by a veth pair. Left alone,
the kernel gives both ends a link-local ``fe80::`` address as they come up, and
the session could reach every host service listening on ``[::]`` through it:
the IPv4 rules (``VR-INPUT``) do not see IPv6. The backend disables IPv6 on
both ends, and ``ip6tables`` chains drop IPv6 on ``vrh+`` links anyway; the
second test gives the session's link IPv6 addresses by hand (a host that routes
IPv6 into sessions) and shows the host stays unreachable.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import Gateway

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_INET6)
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2]), 0, 0))
    print("open")
except OSError as e:
    print(type(e).__name__, e.errno)
"""


def _out(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _connect_from(netns: str, address: str, port: int) -> str:
    return _out("ip", "netns", "exec", netns, sys.executable, "-c", CONNECT, address,
                str(port)).strip()


@pytest.fixture
async def v6_listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP service on every IPv6 address of the host; records who connected."""
    seen: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(on_connect, "::", 0, family=socket.AF_INET6)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def _wait(cond: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _egress_session(gw: Gateway) -> tuple[str, dict[str, str]]:
    session = await gw.create_running(resolution="640x480", network="egress")
    pod = gw.extra["app"][MANAGER].get(session["session_id"]).pod
    return session["session_id"], pod["egress"]


async def test_egress_session_has_no_ipv6(light_gateway: Gateway,
                                          v6_listener: tuple[int, list[str]]) -> None:
    port, seen = v6_listener
    sid, egress = await _egress_session(light_gateway)
    ns, host_if = egress["netns"], egress["host_if"]
    peer = host_if.replace("vrh", "vrs", 1)
    assert "inet6" not in _out("ip", "-6", "addr", "show", "dev", host_if)
    assert "inet6" not in _out("ip", "-n", ns, "-6", "addr", "show", "dev", peer)
    routes = _out("ip", "-n", ns, "-6", "route", "show")
    assert "default" not in routes and peer not in routes, routes
    # The host's own IPv6 addresses (global and loopback-free) are unreachable.
    addresses = [line.split()[3].split("/")[0] for line in
                 _out("ip", "-6", "-o", "addr", "show", "scope", "global").splitlines()]
    assert addresses, "the test machine has a global IPv6 address"
    for address in addresses:
        assert await asyncio.to_thread(_connect_from, ns, address, port) == \
            "OSError 101", address  # ENETUNREACH: no IPv6 route at all
    assert seen == []
    await light_gateway.stop(sid)


async def test_ipv6_put_on_the_link_is_still_dropped(light_gateway: Gateway,
                                                     v6_listener: tuple[int, list[str]]) -> None:
    port, seen = v6_listener
    assert _out("ip6tables", "-w", "-S", "VR6-INPUT").split("\n")[:2] == [
        "-N VR6-INPUT", "-A VR6-INPUT -j DROP"]
    sid, egress = await _egress_session(light_gateway)
    ns, host_if = egress["netns"], egress["host_if"]
    peer = host_if.replace("vrh", "vrs", 1)
    for spec in (["INPUT", "-i", "vrh+", "-j", "VR6-INPUT"],
                 ["FORWARD", "-i", "vrh+", "-j", "VR6-FORWARD"],
                 ["FORWARD", "-o", "vrh+", "-j", "VR6-FORWARD"]):
        subprocess.run(["ip6tables", "-w", "-C", *spec], check=True)
    # A host that hands sessions IPv6: addresses on both ends of the session's link.
    net = f"fd00:231:{secrets.randbelow(0xffff):x}"
    _out("sysctl", "-q", "-w", f"net.ipv6.conf.{host_if}.disable_ipv6=0")
    _out("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{peer}.disable_ipv6=0")
    _out("ip", "-6", "addr", "add", f"{net}::1/64", "dev", host_if, "nodad")
    _out("ip", "-n", ns, "-6", "addr", "add", f"{net}::2/64", "dev", peer, "nodad")
    _out("ip", "-n", ns, "-6", "route", "add", "default", "via", f"{net}::1")
    # The listener accepts the host's own connections on that address ...
    _, writer = await asyncio.open_connection(f"{net}::1", port)
    writer.close()
    await _wait(lambda: len(seen) == 1)
    # ... but not the session's: VR6-INPUT drops them.
    assert await asyncio.to_thread(_connect_from, ns, f"{net}::1", port) == "TimeoutError None"
    await asyncio.sleep(0.5)
    assert len(seen) == 1
    await light_gateway.stop(sid)
