"""deploy/swarm-stack.yml: valid for compose's v3 schema, and every setting it passes
is one the gateway reads (a misspelt VISUAL_RUNTIME_* variable would be ignored)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from gateway.cli.settings_doc import serve_parser
from tests.conftest import require_binary

STACK = Path(__file__).resolve().parents[2] / "deploy" / "swarm-stack.yml"


def test_the_stack_file_runs_a_swarm_gateway_on_a_manager() -> None:
    compose = require_binary("docker-compose")
    done = subprocess.run([compose, "-f", str(STACK), "config"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    gateway = yaml.safe_load(done.stdout)["services"]["gateway"]
    assert gateway["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert gateway["deploy"]["replicas"] == 1
    assert any(str(v).startswith("/var/run/docker.sock:") or
               (isinstance(v, dict) and v.get("source") == "/var/run/docker.sock")
               for v in gateway["volumes"])
    env = gateway["environment"]
    assert env["VISUAL_RUNTIME_BACKEND"] == "swarm"
    flags = {opt for action in serve_parser()._actions for opt in action.option_strings}
    for name in env:
        assert name.startswith("VISUAL_RUNTIME_"), name
        flag = "--" + name.removeprefix("VISUAL_RUNTIME_").lower().replace("_", "-")
        assert flag in flags, f"{name} is not a gateway setting"
