"""``--egress-deny`` in the docker backend (issue 20): egress containers do not reach
private networks.

Checked from inside real docker egress sessions (xterm in the app container,
bash's ``/dev/tcp``) against a namespace the test makes on a private LAN
address (10.233.7.x, in the default deny list) and one on TEST-NET-3 (a public
range, not in the list), both with a TCP listener: with the default list the
private one is unreachable while the public one answers; a gateway started
with the list off (``egress_deny=()``) reaches both, so the target is live.
Each session's chain (``VR-DENY-vrd<hash>``) exists while it runs and is gone
after its stop and after a gateway shutdown that stops it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import pytest

from gateway.backends.docker import DockerBackend
from gateway.config import EGRESS_DENY_DEFAULT
from tests.gateway.test_egress_deny import private_lan
from tests.gateway.test_network import _probe, outside
from tests.gateway_fixtures import Gateway, in_process_gateway, owned

__all__ = ["outside", "private_lan"]  # fixtures used here
pytestmark = pytest.mark.timeout(300)


def _rules() -> str:
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout


def _chain(sid: str) -> str:
    return f"VR-DENY-{DockerBackend._bridge(sid)}"


async def _egress_session(gw: Gateway) -> str:
    return str((await gw.create_running(resolution="800x600", network="egress"))["session_id"])


async def test_docker_egress_sessions_do_not_reach_private_networks(
        tmp_path: Path, docker_client: docker.DockerClient, outside: tuple[str, int],
        private_lan: str) -> None:
    public = f"{outside[0]}:{outside[1]}"
    targets = [public, private_lan]
    state = tmp_path / "default" / "state"
    async for gw in in_process_gateway(tmp_path / "default", backend="docker", apps=("xterm",)):
        sid = await _egress_session(gw)
        chain = _chain(sid)
        rules = _rules()
        bridge = DockerBackend._bridge(sid)
        for parent in ("FORWARD", "DOCKER-USER"):
            assert f"-A {parent} -i {bridge} -j {chain}" in rules, rules
        for network in EGRESS_DENY_DEFAULT:
            net = network if "/" in network else network + "/32"
            assert f"-A {chain} -d {net} -j DROP" in rules, rules
        denied = await _probe(gw, sid, targets)
        await gw.stop(sid)
        assert chain not in _rules()  # the stop took its chain
        # A session still running when the gateway shuts down loses its chain with it.
        left = _chain(await _egress_session(gw))
        assert left in _rules()
    assert left not in _rules()
    assert owned(docker_client, state) == ([], [])
    assert denied == {public: "open", private_lan: "closed"}, denied

    async for gw in in_process_gateway(tmp_path / "open", backend="docker", apps=("xterm",),
                                       egress_deny=()):
        sid = await _egress_session(gw)
        allowed = await _probe(gw, sid, targets)
        await gw.stop(sid)
    assert allowed == {public: "open", private_lan: "open"}, allowed
    assert _chain(sid) not in _rules()
