"""Session lifecycle on the real local backend: timeouts, capacity, leaks, re-adoption."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.backends.cgroup import list_cgroups
from gateway.backends.network import list_namespaces
from tests.gateway_fixtures import (
    API_TOKEN,
    Gateway,
    in_process_gateway,
    owned,
    pod_processes,
    session_ids,
    start_served_gateway,
    stop_served_gateway,
    wait_no_pod_processes,
)


@pytest.mark.parametrize("backend", ["local", "docker"])
async def test_hard_timeout_expires_the_session(tmp_path: Path, backend: str,
                                                request: pytest.FixtureRequest) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_client")
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), minute_s=3.0, backend=backend):
        session = await gw.create_running(timeout_minutes=1, idle_timeout_minutes=0)
        ended = await gw.wait_status(session["session_id"], {"expired", "failed", "stopped"})
        assert ended["status"] == "expired"
        assert ended["stop_reason"] == "timeout"
        assert ended["ended_at"] is not None
    assert wait_no_pod_processes(tmp_path / "state") == []


async def test_idle_timeout_and_activity(tmp_path: Path) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), minute_s=1.5):
        idle = await gw.create_running(idle_timeout_minutes=1)
        busy = await gw.create_running(idle_timeout_minutes=2)
        busy_id = busy["session_id"]
        # Keep the second session busy with agent actions while the first goes idle.
        deadline = time.monotonic() + 30
        while (await gw.get(idle["session_id"]))["status"] == "running":
            async with gw.http.post(gw.url(f"/api/visual-sessions/{busy_id}/actions"),
                                    json={"action": "mouse_move", "coordinate": [10, 10]},
                                    headers=gw.auth) as resp:
                assert resp.status == 200, await resp.text()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        ended = await gw.wait_status(idle["session_id"], {"expired"})
        assert ended["stop_reason"] == "idle_timeout"
        assert (await gw.get(busy_id))["status"] == "running"
        # Watching is not activity: with no actions the busy one goes idle too.
        ended = await gw.wait_status(busy_id, {"expired"})
        assert ended["stop_reason"] == "idle_timeout"


@pytest.mark.parametrize("backend", ["local", "docker"])
async def test_capacity_limit_gives_503_with_retry_after(tmp_path: Path, backend: str,
                                                         request: pytest.FixtureRequest) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_client")
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), max_sessions=1, backend=backend):
        first = await gw.create()
        async with gw.http.post(gw.url("/api/visual-sessions"), json={},
                                headers=gw.auth) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 503
            assert resp.content_type == "application/problem+json"
            assert int(resp.headers["Retry-After"]) > 0
        async with gw.http.get(gw.url("/api/visual-sessions"), headers=gw.auth) as resp:
            assert len((await resp.json())["sessions"]) == 1, body
        await gw.stop(first["session_id"])
        second = await gw.create_running()
        await gw.stop(second["session_id"])


async def test_stop_is_idempotent_and_delete_removes_everything(api_gateway: Gateway) -> None:
    gw = api_gateway
    session = await gw.create_running()
    sid = session["session_id"]
    first = await gw.stop(sid)
    second = await gw.stop(sid)
    assert first == second
    assert first["status"] == "stopped"
    session_dir = gw.state_dir / "sessions" / sid
    assert (session_dir / "logs").is_dir()  # logs are kept after the session ends
    async with gw.http.delete(gw.url(f"/api/visual-sessions/{sid}"), headers=gw.auth) as resp:
        assert resp.status == 204
    assert not session_dir.exists()
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}"), headers=gw.auth) as resp:
        assert resp.status == 404


async def test_stop_while_starting(api_gateway: Gateway) -> None:
    gw = api_gateway
    created = await gw.create()
    stopped = await gw.stop(created["session_id"])
    assert stopped["status"] == "stopped"
    assert wait_no_pod_processes(gw.state_dir) == []


def _leftovers(state_dir: Path, runtime: Path) -> dict[str, object]:
    mounts = Path("/proc/self/mountinfo").read_text()
    ids = session_ids(state_dir)
    return {
        "processes": pod_processes(state_dir),
        "cgroups": [c for c in list_cgroups() if c.rsplit(".", 1)[0] in ids],
        "netns": [n for n in list_namespaces() if n.removeprefix("vr-") in ids],
        "mounts": [line for line in mounts.splitlines() if str(state_dir) in line],
        "runtime": sorted(p.name for p in runtime.iterdir() if p.name != "slots")
        if runtime.exists() else [],
        "slots": sorted(os.listdir(runtime / "slots")) if (runtime / "slots").exists() else [],
    }


@pytest.mark.parametrize("backend", ["local", "docker"])
async def test_a_stop_at_any_moment_of_the_start_ends_it_and_leaks_nothing(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    """A stop lands in each part of a start: making the session's disk, spawning the
    sandboxes, waiting for the first frame. Each stop answers, and nothing is left.

    A stop during the disk step once raced the still-running step (the clean-up
    removed the disk, then the step laid out ``home`` again), and the cancelled start
    then waited for the lock its stopper held: the stop never answered."""
    client = request.getfixturevalue("docker_client") if backend == "docker" else None
    runtime = tmp_path / "run"
    async for gw in in_process_gateway(tmp_path, backend=backend, apps=("xterm",),
                                       runtime_dir=runtime):
        for delay in (0.0, 0.005, 0.01, 0.02, 0.035, 0.05, 0.08, 0.12, 0.2, 0.35, 0.6, 1.0):
            created = await gw.create(resolution="640x480", enable_recording=False)
            sid = created["session_id"]
            await asyncio.sleep(delay)
            async with asyncio.timeout(60):  # a deadlocked stop fails here, not at 120 s
                stopped = await gw.stop(sid)
            assert stopped["status"] in {"stopped", "failed"}, (delay, stopped)
            session_dir = gw.state_dir / "sessions" / sid
            assert not (session_dir / "disk.img").exists(), delay
            assert not (session_dir / "disk").exists(), delay
            assert (session_dir / "home" / "Downloads").is_dir(), delay
            assert wait_no_pod_processes(gw.state_dir) == [], delay
        assert _leftovers(gw.state_dir, runtime) == {
            "processes": [], "cgroups": [], "netns": [], "mounts": [], "runtime": [],
            "slots": []}
        if client is not None:
            assert owned(client, gw.state_dir) == ([], [])


async def test_twenty_cycles_leak_nothing(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), runtime_dir=runtime):
        for i in range(20):
            network = "egress" if i % 2 else "none"
            session = await gw.create_running(resolution="640x480", network=network)
            await gw.stop(session["session_id"])
            assert wait_no_pod_processes(gw.state_dir) == []
        left = _leftovers(gw.state_dir, runtime)
        assert left == {"processes": [], "cgroups": [], "netns": [], "mounts": [],
                        "runtime": [], "slots": []}


async def test_readoption_after_sigkill_of_the_gateway(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, url = start_served_gateway(state, "--apps", "xterm")
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(url + "/api/visual-sessions", json={}) as resp:
                kept = await resp.json()
            async with http.post(url + "/api/visual-sessions", json={}) as resp:
                lost = await resp.json()
            for s in (kept, lost):
                async with http.get(url + f"/api/visual-sessions/{s['session_id']}?wait=running") as resp:
                    assert (await resp.json())["status"] == "running"
        stop_served_gateway(proc, signal.SIGKILL)
        assert pod_processes(state), "pods must survive the gateway"
        # While the gateway is down, one pod dies.
        from gateway.sessions.store import SessionStore

        store = SessionStore(state / "sessions.sqlite3")
        store.open()
        pods = {s.session_id: s.pod for s in store.load_all()}
        store.close()
        os.kill(int(pods[lost["session_id"]]["app_ns_pid"]), signal.SIGKILL)  # type: ignore[call-overload]

        proc, url = start_served_gateway(state, "--apps", "xterm")
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(url + f"/api/visual-sessions/{kept['session_id']}") as resp:
                adopted = await resp.json()
            assert adopted["status"] == "running"
            async with http.get(url + f"/api/visual-sessions/{kept['session_id']}/screenshot") as resp:
                assert resp.status == 200
                assert (await resp.read())[:8] == b"\x89PNG\r\n\x1a\n"
            # Its tokens still work after the restart.
            async with http.get(url + f"/api/visual-sessions/{kept['session_id']}",
                                headers={"Authorization": f"Bearer {kept['tokens']['view']}"}) as resp:
                assert resp.status == 200
            async with http.get(url + f"/api/visual-sessions/{lost['session_id']}") as resp:
                gone = await resp.json()
            assert gone["status"] == "failed"
            assert gone["stop_reason"] == "error"
            assert gone["error"]
    finally:
        stop_served_gateway(proc)  # SIGTERM: stops the adopted session cleanly
    assert wait_no_pod_processes(state) == []
    ids = session_ids(state)
    assert [c for c in list_cgroups() if c.rsplit(".", 1)[0] in ids] == []
    assert [n for n in list_namespaces() if n.removeprefix("vr-") in ids] == []


async def test_sigterm_stops_every_session(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, url = start_served_gateway(state, "--apps", "xterm")
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            ids = []
            for _ in range(2):
                async with http.post(url + "/api/visual-sessions", json={}) as resp:
                    ids.append((await resp.json())["session_id"])
            for sid in ids:
                async with http.get(url + f"/api/visual-sessions/{sid}?wait=running") as resp:
                    assert (await resp.json())["status"] == "running"
    finally:
        stop_served_gateway(proc, signal.SIGTERM)
    assert proc.returncode == 0
    assert wait_no_pod_processes(state) == []
    from gateway.sessions.store import SessionStore

    store = SessionStore(state / "sessions.sqlite3")
    store.open()
    try:
        assert {(s.status.value, s.stop_reason.value if s.stop_reason else None)
                for s in store.load_all()} == {("stopped", "shutdown")}
    finally:
        store.close()
