"""``visual-runtime doctor`` on this machine, with programs hidden, and the pointers to it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from gateway.cli.doctor import DoctorOptions, check_port
from tests.cli.helpers import clean_env, path_without, run_cli
from tests.gateway_fixtures import API_TOKEN, in_process_gateway, wait_no_pod_processes

LOCAL_CHECKS = {"Xvfb", "fluxbox", "xterm", "chromium", "x11vnc", "ffmpeg", "ffprobe", "bwrap",
                "setpriv", "nsenter", "ip", "iptables", "root", "code readable", "sandbox",
                "user namespaces", "network namespaces", "cgroups", "XShm in a pod",
                "runtime dir", "pod uid range", "warm pool", "session disk", "state dir",
                "free disk", "port"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_doctor_passes_on_this_machine(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = run_cli("doctor", "--json", "--state-dir", str(state), "--port", str(_free_port()))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["backend"] == "local"
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == LOCAL_CHECKS
    for check in checks.values():
        if check["required"]:
            assert check["ok"], check
    assert "seccomp filter" in checks["sandbox"]["detail"], checks["sandbox"]
    # The real probes ran: a sandboxed Xvfb was captured over MIT-SHM.
    assert checks["XShm in a pod"]["ok"], checks["XShm in a pod"]
    assert "cgroup v" in checks["cgroups"]["detail"]
    assert not state.exists(), "doctor must not create the state dir"

    human = run_cli("doctor", "--state-dir", str(state), "--port", str(_free_port()))
    assert human.returncode == 0, human.stdout + human.stderr
    assert "  OK    ffmpeg" in human.stdout
    assert f"All {sum(c['required'] for c in checks.values())} required checks passed" \
        in human.stdout


@pytest.mark.parametrize(("program", "package"), [("ffmpeg", "ffmpeg"), ("Xvfb", "xvfb")])
def test_doctor_fails_when_a_program_is_hidden(tmp_path: Path, program: str,
                                               package: str) -> None:
    env = clean_env(PATH=path_without(tmp_path, program))
    result = run_cli("doctor", "--state-dir", str(tmp_path / "state"), "--port", "0", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL  {program:<19} {program} (" in result.stdout
    assert f"fix: apt-get install {package}" in result.stdout
    assert f"required checks failed: {program}." in result.stdout

    as_json = run_cli("doctor", "--json", "--state-dir", str(tmp_path / "state"), "--port", "0",
                      env=env)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    failed = [c for c in report["checks"] if c["failed"]]
    assert [c["name"] for c in failed] == [program]
    assert failed[0]["fix"] == f"apt-get install {package}"
    if program == "Xvfb":
        xshm = next(c for c in report["checks"] if c["name"] == "XShm in a pod")
        assert xshm["skipped"] is True


def test_port_check_names_another_program(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        check = check_port(DoctorOptions(port=port))
        assert not check.ok and check.required
        assert "in use by another program" in check.detail
        assert f"sport = :{port}" in check.fix
    free = check_port(DoctorOptions(port=port))
    assert free.ok, free


def test_doctor_docker_backend_checks_engine_and_image(tmp_path: Path) -> None:
    result = run_cli("doctor", "--backend", "docker", "--json", "--state-dir",
                     str(tmp_path / "state"), "--port", "0")
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["docker engine"]["ok"], checks["docker engine"]
    assert checks["session image"]["ok"], checks["session image"]
    assert checks["pod uid range"]["ok"], checks["pod uid range"]  # docker pods use it too
    assert "bwrap" not in checks and "XShm in a pod" not in checks
    assert result.returncode == 0, result.stdout


def test_serve_points_at_doctor_when_the_machine_cannot_run_sessions(tmp_path: Path) -> None:
    env = clean_env(PATH=path_without(tmp_path, "bwrap"))
    result = run_cli("serve", "--port", "0", "--state-dir", str(tmp_path / "state"),
                     "--token", API_TOKEN, env=env, timeout=60)
    assert result.returncode == 1
    assert "bwrap" in result.stderr
    assert "Run `visual-runtime doctor`" in result.stderr


async def test_a_session_that_cannot_start_points_at_doctor(tmp_path: Path) -> None:
    # A start budget no pod can meet: the backend gives up like on a broken machine.
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), start_timeout_s=0.01):
        created = await gw.create()
        session = await gw.wait_status(created["session_id"], {"failed"}, timeout=60)
        assert session["error"].startswith("no first frame within")
        assert session["error"].endswith("run `visual-runtime doctor` to check this machine")
    assert wait_no_pod_processes(gw.state_dir) == []
