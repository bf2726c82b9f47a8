"""Fixtures that run a real gateway with the real ``local`` backend.

* :func:`in_process_gateway` — ``create_app`` on an aiohttp test server (port 0)
  in the test's own event loop;
* :func:`served_gateway` — the ``visual-runtime serve`` command in a subprocess.

Both use a fresh state dir and a known API token, and stop every session at
the end (the in-process one through the app's cleanup, the served one by
SIGTERM), then check that no pod process, cgroup or network namespace of
theirs is left behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import GatewayConfig

API_TOKEN = "test-api-token-0123456789"
SLOW_START_S = float(os.environ.get("VR_TEST_START_TIMEOUT_S") or 0)
"""Opt-in for a slow machine (the emulated cgroup v2 guest of scripts/cgroup-v2-vm.sh):
the gateways' start timeout and how long ``create_running`` waits, in s (0: defaults)."""


@dataclass
class Gateway:
    """A running gateway as seen by a test."""

    base_url: str
    token: str
    state_dir: Path
    http: aiohttp.ClientSession
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def url(self, path: str) -> str:
        return self.base_url + path

    async def create(self, **body: Any) -> dict[str, Any]:
        async with self.http.post(self.url("/api/visual-sessions"), json=body,
                                  headers=self.auth) as resp:
            data = await resp.json()
            assert resp.status == 201, data
            return data

    async def get(self, sid: str, wait: bool = False) -> dict[str, Any]:
        suffix = "?wait=running" if wait else ""
        async with self.http.get(self.url(f"/api/visual-sessions/{sid}{suffix}"),
                                 headers=self.auth) as resp:
            data = await resp.json()
            assert resp.status == 200, data
            return data

    async def create_running(self, **body: Any) -> dict[str, Any]:
        created = await self.create(**body)
        session = await self.get(created["session_id"], wait=True)
        deadline = time.monotonic() + SLOW_START_S  # ?wait=running holds 30 s at most
        while session["status"] == "starting" and time.monotonic() < deadline:
            session = await self.get(created["session_id"], wait=True)
        assert session["status"] == "running", session
        session["tokens"] = created["tokens"]
        return session

    async def stop(self, sid: str) -> dict[str, Any]:
        async with self.http.post(self.url(f"/api/visual-sessions/{sid}/stop"),
                                  headers=self.auth) as resp:
            data = await resp.json()
            assert resp.status == 200, data
            return data

    async def wait_status(self, sid: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            session = await self.get(sid)
            if session["status"] in statuses:
                return session
            if time.monotonic() > deadline:
                raise AssertionError(f"session {sid} still {session['status']} after {timeout}s")
            await asyncio.sleep(0.1)


def session_ids(state_dir: Path) -> set[str]:
    """Every session a gateway with this state dir ever created (from its store)."""
    ids = set()
    sessions = state_dir / "sessions"
    if sessions.is_dir():
        ids.update(p.name for p in sessions.iterdir())
    db = state_dir / "sessions.sqlite3"
    if db.exists():
        import sqlite3

        con = sqlite3.connect(db)
        try:
            ids.update(row[0] for row in con.execute("SELECT session_id FROM sessions"))
        finally:
            con.close()
    return ids


def pod_processes(state_dir: Path) -> list[int]:
    """Pids of processes in a pod cgroup of any session of *state_dir*.

    Scoped by session id because other gateways (other test runs) may have
    live sessions on the same machine.
    """
    ids = session_ids(state_dir)
    if not ids:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        for match in re.finditer(r"/visual-runtime/([A-Za-z0-9_-]+)\.(app|agent)", cgroups):
            if match.group(1) in ids:
                pids.append(int(entry.name))
                break
    return pids


def wait_no_pod_processes(state_dir: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = pod_processes(state_dir)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def gateway_config(state_dir: Path, **overrides: Any) -> GatewayConfig:
    values: dict[str, Any] = {"state_dir": state_dir, "token": API_TOKEN, "port": 0,
                              "poll_interval_s": 0.25}
    if SLOW_START_S:
        values["start_timeout_s"] = SLOW_START_S
    values.update(overrides)
    return GatewayConfig(**values)


async def in_process_gateway(tmp_path: Path, **overrides: Any) -> AsyncIterator[Gateway]:
    config = gateway_config(tmp_path / "state", **overrides)
    app = create_app(config, API_TOKEN)
    server = TestServer(app, host="127.0.0.1", port=0)
    client = TestClient(server)
    await client.start_server()
    try:
        gw = Gateway(str(server.make_url("")).rstrip("/"), API_TOKEN, config.state_dir,
                     client.session)
        gw.extra["app"] = app
        yield gw
    finally:
        await client.close()


def start_served_gateway(state_dir: Path, *extra_args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``visual-runtime serve`` on a free port; return (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--state-dir", str(state_dir),
         "--token", API_TOKEN, *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line and proc.poll() is not None:
            break
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    proc.wait()
    pytest.fail("visual-runtime serve did not start")


def stop_served_gateway(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the real Docker engine with the session image (never a skip)."""
    import docker
    import docker.errors

    from gateway.config import GatewayConfig

    image = GatewayConfig().docker_image
    try:
        client = docker.from_env(timeout=60)
    except docker.errors.DockerException as e:
        pytest.fail(f"no docker engine ({e}); run scripts/docker-setup.sh")
    try:
        client.ping()
        client.images.get(image)
    except docker.errors.ImageNotFound:
        client.close()
        pytest.fail(f"image {image} is missing; run scripts/docker-setup.sh")
    except docker.errors.DockerException as e:
        client.close()
        pytest.fail(f"no docker engine ({e}); run scripts/docker-setup.sh")
    yield client
    client.close()


def owned(client: Any, state_dir: Path) -> tuple[list[str], list[str]]:
    """Names of the containers and networks labelled as this gateway's."""
    from gateway.backends.docker import LABEL_GATEWAY, gateway_label

    label = f"{LABEL_GATEWAY}={gateway_label(state_dir)}"
    containers = [c.name for c in client.containers.list(all=True, filters={"label": label})]
    networks = [n.name for n in client.networks.list(filters={"label": label})]
    return containers, networks


@pytest.fixture(params=["local", "docker"])
async def api_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    """An in-process gateway on each backend, sessions with fluxbox + xterm:
    the same API tests run against ``local`` and ``docker``."""
    client = request.getfixturevalue("docker_client") if request.param == "docker" else None
    async for gw in in_process_gateway(tmp_path, backend=request.param,
                                       apps=("fluxbox", "xterm")):
        gw.extra["backend"] = request.param
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []
    if client is not None:
        assert owned(client, gw.state_dir) == ([], [])


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """An in-process gateway (full desktop apps) with the local backend."""
    async for gw in in_process_gateway(tmp_path):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


@pytest.fixture
async def light_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """An in-process gateway whose sessions run only Xvfb + xterm (fast lifecycle tests)."""
    async for gw in in_process_gateway(tmp_path, apps=("xterm",)):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


@pytest.fixture
def served_gateway(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``visual-runtime serve`` in a subprocess: (process, base URL, state dir)."""
    state = tmp_path / "served-state"
    proc, url = start_served_gateway(state)
    try:
        yield proc, url, state
    finally:
        stop_served_gateway(proc)
        assert wait_no_pod_processes(state) == []
