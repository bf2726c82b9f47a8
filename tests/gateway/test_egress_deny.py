"""Egress sessions do not reach private networks by default (issue 20, medium).

``GatewayConfig.egress_deny`` (``--egress-deny``; default: 10/8, 172.16/12,
192.168/16, 100.64/10 and the non-link-local metadata addresses) is dropped
for each egress session in a chain of its own, hooked before everything else.
Checked from inside real sessions against a container on the host's Docker
bridge (172.17/16, what an egress session reached before) and a namespace on
a private LAN address, while a public address (TEST-NET-3 standing in for the
internet) stays reachable; a gateway started with ``egress_deny=()`` reaches
all three (the targets are live), and a stopped session leaves no chain.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from gateway.appkeys import MANAGER
from gateway.config import GatewayConfig
from tests.gateway.test_network import LISTENER, _probe, _run, outside
from tests.gateway_fixtures import Gateway, in_process_gateway

__all__ = ["outside"]  # fixture used here
pytestmark = pytest.mark.timeout(300)
SERVER = ("import http.server as h; h.ThreadingHTTPServer(('', 8000), "
          "h.BaseHTTPRequestHandler).serve_forever()")


@pytest.fixture
def bridge_container() -> Iterator[str]:
    """A container on the host's default Docker bridge, listening on 8000: its address."""
    client = docker.from_env()
    container = client.containers.run(
        GatewayConfig().docker_image, ["python3", "-c", SERVER], detach=True, remove=True,
        name=f"vrtest-bridge-{secrets.token_hex(3)}", user="65534:65534")
    try:
        container.reload()
        yield f"{container.attrs['NetworkSettings']['IPAddress']}:8000"
    finally:
        container.stop(timeout=2)
        client.close()


@pytest.fixture
def private_lan() -> Iterator[str]:
    """A namespace on a private (10/8) address with a TCP listener: "addr:port"."""
    name = "vrtest-" + secrets.token_hex(3)
    host_if, peer = "vrp" + name[-6:], "vrq" + name[-6:]
    base = 4 * secrets.randbelow(64)
    host_ip, lan_ip = f"10.233.7.{base + 1}", f"10.233.7.{base + 2}"
    _run("ip", "netns", "add", name)
    proc = None
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", name)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{lan_ip}/30", "dev", peer)
        _run("ip", "-n", name, "link", "set", peer, "up")
        _run("ip", "-n", name, "route", "add", "default", "via", host_ip)
        port = 20000 + secrets.randbelow(20000)
        proc = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-c", LISTENER,
                                 str(port)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield f"{lan_ip}:{port}"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        subprocess.run(["ip", "link", "delete", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _chains() -> str:
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout


async def _reach(gw: Gateway, targets: list[str]) -> tuple[dict[str, str], str]:
    sid = (await gw.create_running(resolution="640x480", network="egress"))["session_id"]
    host_if = gw.extra["app"][MANAGER].get(sid).pod["egress"]["host_if"]
    try:
        return await _probe(gw, sid, targets), host_if
    finally:
        await gw.stop(sid)


async def test_private_networks_are_denied_by_default(
        tmp_path: Path, outside: tuple[str, int], bridge_container: str,
        private_lan: str) -> None:
    public = f"{outside[0]}:{outside[1]}"
    targets = [public, bridge_container, private_lan]
    async for gw in in_process_gateway(tmp_path / "default", apps=("xterm",)):
        result, host_if = await _reach(gw, targets)
    assert result == {public: "open", bridge_container: "closed", private_lan: "closed"}, result
    assert f"VR-DENY-{host_if}" not in _chains()  # the stopped session took its chain
    async for gw in in_process_gateway(tmp_path / "open", apps=("xterm",), egress_deny=()):
        result, _ = await _reach(gw, targets)
    assert result == {public: "open", bridge_container: "open", private_lan: "open"}, result
