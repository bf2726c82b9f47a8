"""Unit tests of what the gateway tells a swarm pod for ``network: "egress"``
(gateway/backends/swarm_egress.py); the pod's side runs for real in
test_swarm_cluster.py (test_egress_sessions_on_a_worker)."""

from __future__ import annotations

import pytest

from gateway.backends.swarm_egress import egress_env, node_addresses, slot_addresses
from gateway.errors import BackendError

NODES = [
    {"Status": {"Addr": "172.17.0.1"}, "ManagerStatus": {"Addr": "172.17.0.1:2377"},
     "Spec": {"Labels": {}}},
    {"Status": {"Addr": "172.17.0.3"}, "Spec": {"Labels": {"visual-runtime.address": "198.51.100.7"}}},
    {"Status": {"Addr": "0.0.0.0"}, "Spec": {}},
    {"Status": {"Addr": "fd00::5"}, "Spec": {}},
]


def test_each_slot_has_its_own_30() -> None:
    assert slot_addresses(0) == ("10.232.0.1", "10.232.0.2")
    assert slot_addresses(1) == ("10.232.0.5", "10.232.0.6")
    assert slot_addresses(16383) == ("10.232.255.253", "10.232.255.254")
    with pytest.raises(BackendError, match="slot 16384"):
        slot_addresses(16384)


def test_node_addresses_are_every_ipv4_address_swarm_knows() -> None:
    assert node_addresses(NODES) == ["172.17.0.1", "172.17.0.3", "198.51.100.7"]


def test_the_deny_list_adds_nodes_and_a_specific_gateway_address() -> None:
    env = egress_env(2, ("10.0.0.0/8",), NODES, "203.0.113.9")
    assert env["VR_EGRESS"] == "2 10.232.0.9 10.232.0.10"
    assert env["VR_EGRESS_DENY"].split() == [
        "10.0.0.0/8", "172.17.0.1/32", "172.17.0.3/32", "198.51.100.7/32", "203.0.113.9/32"]
    # --egress-deny none still keeps every node (and so the manager's gateway) out.
    assert egress_env(0, (), NODES, "0.0.0.0")["VR_EGRESS_DENY"].split() == [
        "172.17.0.1/32", "172.17.0.3/32", "198.51.100.7/32"]
    assert "127.0.0.1" not in egress_env(0, (), NODES, "127.0.0.1")["VR_EGRESS_DENY"]
