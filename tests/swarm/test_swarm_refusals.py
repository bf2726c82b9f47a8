"""What the swarm backend does not do is refused at start with a clear message:
the warm pool and runtime agent restarts (docs/swarm.md, *Not on swarm*).
``doctor --backend swarm`` says so too (its "pod features" check, asserted in
test_swarm_cluster.py on a real swarm)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import GatewayConfig


@pytest.mark.parametrize(("settings", "flag"), [
    ({"pool_size": 1}, "--pool-size"),
    ({"pool": (("1280x720/none", 1),)}, "--pool"),
    ({"agent_restarts": 2}, "--agent-restarts"),
])
def test_the_config_refuses_what_swarm_pods_do_not_do(settings: dict[str, object],
                                                     flag: str) -> None:
    with pytest.raises(ValueError, match=f"swarm backend .*{flag}"):
        GatewayConfig(backend="swarm", max_sessions=4, **settings)  # type: ignore[arg-type]
    GatewayConfig(backend="docker", max_sessions=4, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", ["serve", "doctor"])
def test_serve_and_doctor_refuse_a_pool_on_swarm(command: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", command, "--backend", "swarm", "--pool-size", "1",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "invalid configuration: the swarm backend keeps no warm pool" in done.stderr
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())
