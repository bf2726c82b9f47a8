"""Network isolation of the app sandbox, checked from inside a real session.

"egress": outbound traffic leaves through the host (here: to a network
namespace this test creates to stand in for the internet), but the host's own
services and other sessions are unreachable. "none": nothing is reachable.
The probe runs in the session's xterm, typed by the agent action API.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import Gateway

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def outside() -> Iterator[tuple[str, int]]:
    """A namespace standing in for the internet, with a TCP listener: (address, port)."""
    name = "vrtest-" + secrets.token_hex(3)
    host_if, peer = "vrt" + name[-6:], "vro" + name[-6:]
    # TEST-NET-3, a public (documentation) range: private ones are on the gateway's
    # default egress deny list (GatewayConfig.egress_deny).
    base = 4 * secrets.randbelow(64)
    host_ip, out_ip = f"203.0.113.{base + 1}", f"203.0.113.{base + 2}"
    _run("ip", "netns", "add", name)
    proc = None
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", name)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{out_ip}/30", "dev", peer)
        _run("ip", "-n", name, "link", "set", peer, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        port = 20000 + secrets.randbelow(20000)
        proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", LISTENER,
                                 str(port)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield out_ip, port
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        subprocess.run(["ip", "link", "delete", host_if], capture_output=True)


@pytest.fixture
async def host_listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP service on all of the host's addresses; records who connected."""
    seen: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(on_connect, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


async def _probe(gw: Gateway, sid: str, targets: list[str]) -> dict[str, str]:
    """Try a TCP connect to each host:port from inside the session; return open/closed."""
    out = gw.state_dir / "sessions" / sid / "home" / "Downloads" / "net.txt"
    checks = "; ".join(
        f"(timeout 3 bash -c 'exec 3<>/dev/tcp/{t.replace(':', '/')}' 2>/dev/null"
        f" && echo '{t} open' || echo '{t} closed')" for t in targets
    )
    command = f"{{ {checks}; }} > ~/Downloads/.net.tmp; mv ~/Downloads/.net.tmp ~/Downloads/net.txt"
    base = f"/api/visual-sessions/{sid}/actions"
    for action in ({"action": "left_click", "coordinate": [300, 200]},
                   {"action": "type", "text": command},
                   {"action": "key", "text": "Return"}):
        async with gw.http.post(gw.url(base), json=action, headers=gw.auth) as resp:
            assert resp.status == 200, await resp.text()
    deadline = time.monotonic() + 30 + 3 * len(targets)
    while not out.exists():
        assert time.monotonic() < deadline, "the probe did not finish in the session"
        await asyncio.sleep(0.1)
    result = {}
    for line in out.read_text().splitlines():
        target, _, state = line.rpartition(" ")
        result[target] = state
    return result


def _host_addresses() -> list[str]:
    text = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                          capture_output=True, text=True, check=True).stdout
    addrs = [line.split()[3].split("/")[0] for line in text.splitlines()]
    return [a for a in addrs if not a.startswith(("10.231.", "10.232."))]


async def test_egress_reaches_out_but_not_the_host_or_other_sessions(
    light_gateway: Gateway, outside: tuple[str, int], host_listener: tuple[int, list[str]]
) -> None:
    gw = light_gateway
    port, seen = host_listener
    out_ip, out_port = outside
    a = await gw.create_running(resolution="640x480", network="egress")
    b = await gw.create_running(resolution="640x480", network="egress")
    manager = gw.extra["app"][MANAGER]
    a_pod, b_pod = manager.get(a["session_id"]).pod, manager.get(b["session_id"]).pod
    gateway_port = int(gw.base_url.rsplit(":", 1)[1])
    # A service inside session b's namespace (started by this test, as root).
    b_ns = b_pod["egress"]["netns"]
    b_port = 20000 + secrets.randbelow(20000)
    b_listener = subprocess.Popen(["ip", "netns", "exec", b_ns, sys.executable, "-c", LISTENER,
                                   str(b_port)], stdout=subprocess.PIPE)
    try:
        assert b_listener.stdout is not None and b_listener.stdout.readline().strip() == b"ready"
        host_targets = [f"{a_pod['egress']['host_ip']}:{port}",
                        f"{a_pod['egress']['host_ip']}:{gateway_port}",
                        *(f"{addr}:{port}" for addr in _host_addresses())]
        targets = [f"{out_ip}:{out_port}", f"{b_pod['egress']['sandbox_ip']}:{b_port}",
                   f"127.0.0.1:{gateway_port}", *host_targets]
        result = await _probe(gw, a["session_id"], targets)
    finally:
        b_listener.kill()
        b_listener.wait()
        if b_listener.stdout is not None:
            b_listener.stdout.close()
    assert result.pop(f"{out_ip}:{out_port}") == "open", "egress must work"
    assert set(result.values()) == {"closed"}, result
    assert seen == []


async def test_network_none_reaches_nothing(
    light_gateway: Gateway, outside: tuple[str, int], host_listener: tuple[int, list[str]]
) -> None:
    gw = light_gateway
    port, seen = host_listener
    out_ip, out_port = outside
    session = await gw.create_running(resolution="640x480", network="none")
    gateway_port = int(gw.base_url.rsplit(":", 1)[1])
    targets = [f"{out_ip}:{out_port}", f"127.0.0.1:{gateway_port}",
               *(f"{addr}:{port}" for addr in _host_addresses())]
    result = await _probe(gw, session["session_id"], targets)
    assert set(result.values()) == {"closed"}, result
    assert seen == []
    pod = gw.extra["app"][MANAGER].get(session["session_id"]).pod
    assert pod["egress"] is None
    assert Path("/run/netns").exists() is False or not any(
        p.name == "vr-" + session["session_id"] for p in Path("/run/netns").iterdir())
