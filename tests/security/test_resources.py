"""Resource limits hold per session, and the gateway reports every hit.

A fork bomb and a memory hog run INSIDE session 1's app sandbox (as its user,
in its cgroup). Only session 1's processes are affected: session 2 keeps
running and serving frames, the gateway's API answers throughout, and
session 1 gets ``resource_limit`` events (from the cgroup's pids.events and
OOM-kill counts); a session whose desktop is OOM-killed fails with a reason
that names the memory limit. The memory limit is small (256 MiB) and swap is
off for the cgroup, so the hog cannot press the host.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import (
    Gateway,
    in_process_gateway,
    owned,
    pod_processes,
    wait_no_pod_processes,
)
from tests.recording.helpers import events_of, wait_event
from tests.security.helpers import probe, run_in_app

pytestmark = pytest.mark.timeout(180)

MEMORY_MB = 256
PIDS = 96

FORK_BOMB = r'''
import signal, time
children, error = [], None
deadline = time.monotonic() + 20          # bounded: never more than 20 s
while time.monotonic() < deadline:
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode[e.errno]
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "error": error}))
'''

MEMORY_HOG = r'''
import mmap, sys
chunks = []
for i in range(64):                       # bounded: 1 GiB at most
    m = mmap.mmap(-1, 16 << 20)
    for off in range(0, 16 << 20, 4096):
        m[off] = 1                        # touch every page: real, resident memory
    chunks.append(m)
    print(f"{(i + 1) * 16} MiB", flush=True)
'''


DOCKER_PIDS = 512
"""The docker backend never sets a pids limit below this (Chromium's own needs)."""


@pytest.fixture(params=["local", "docker"])
async def limited(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    backend = str(request.param)
    client = request.getfixturevalue("docker_client") if backend == "docker" else None
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), session_memory_mb=MEMORY_MB,
                                       session_pids=PIDS, backend=backend):
        gw.extra["backend"] = backend
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []
    if client is not None:
        assert owned(client, gw.state_dir) == ([], [])


@pytest.fixture
async def limited_local(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), session_memory_mb=MEMORY_MB,
                                       session_pids=PIDS):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


class ApiWatch:
    """Polls /healthz and a bystander session while a limit is being hit."""

    def __init__(self, gw: Gateway, sid: str) -> None:
        self.gw, self.sid = gw, sid
        self.ok = 0
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for path in ("/healthz", f"/api/visual-sessions/{self.sid}"):
                try:
                    async with self.gw.http.get(self.gw.url(path), headers=self.gw.auth) as resp:
                        await resp.read()
                        if resp.status == 200:
                            self.ok += 1
                        else:
                            self.failures.append(f"{path}: {resp.status}")
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    self.failures.append(f"{path}: {e!r}")
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> ApiWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _screenshot(gw: Gateway, sid: str) -> bytes:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        body = await resp.read()
        assert resp.status == 200, body[:300]
    log = gw.state_dir / "sessions" / sid / "logs" / "agent.log"
    assert body[:8] == b"\x89PNG\r\n\x1a\n", (body[:200], log.read_text()[-3000:])
    return body


async def _metric(gw: Gateway, name: str) -> str:
    async with gw.http.get(gw.url("/metrics")) as resp:
        text = await resp.text()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def test_fork_bomb_hits_only_its_own_session(limited: Gateway) -> None:
    gw = limited
    s1 = (await gw.create_running(resolution="640x480"))["session_id"]
    s2 = (await gw.create_running(resolution="640x480"))["session_id"]
    async with ApiWatch(gw, s2) as watch:
        result = await probe(gw, s1, FORK_BOMB, timeout=60)
        # Forks stop at the session's pids limit (its processes and threads count too).
        assert result["error"] == "EAGAIN", result
        local = gw.extra["backend"] == "local"
        assert 0 < result["forked"] < (PIDS if local else DOCKER_PIDS)
        event = await wait_event(gw, s1, "resource_limit", kind="pids")
        assert event["count"] >= 1
        assert event["limit"] == f"{PIDS if local else DOCKER_PIDS} processes"
        await _screenshot(gw, s2)
    assert watch.failures == [] and watch.ok > 0
    # The bomb is gone; both desktops go on (the bomb's pids were its own).
    assert (await gw.get(s1))["status"] == "running"
    await _screenshot(gw, s1)
    assert await events_of(gw, s2, "resource_limit") == []
    assert 'visual_runtime_resource_limit_hits_total{kind="pids"}' in await _metric(
        gw, "visual_runtime_resource_limit_hits_total")
    await gw.stop(s1)
    await gw.stop(s2)


async def test_memory_hog_is_killed_inside_its_own_session(limited: Gateway) -> None:
    gw = limited
    s1 = (await gw.create_running(resolution="640x480"))["session_id"]
    s2 = (await gw.create_running(resolution="640x480"))["session_id"]
    async with ApiWatch(gw, s2) as watch:
        hog = await run_in_app(gw, s1, ["python3", "-c", MEMORY_HOG], timeout=90)
        # The kernel's OOM killer, inside the session's cgroup, picks the hog.
        assert hog.code in (-9, 137), (hog.code, hog.out[-200:], hog.err[-500:])  # SIGKILL
        reached = int(hog.out.split()[-2])
        assert 64 <= reached <= MEMORY_MB, hog.out[-200:]
        event = await wait_event(gw, s1, "resource_limit", kind="memory")
        assert event["count"] >= 1 and event["limit"] == f"{MEMORY_MB} MiB"
        await _screenshot(gw, s2)
    assert watch.failures == [] and watch.ok > 0
    # Xvfb was small, so the desktop survived the hog.
    assert (await gw.get(s1))["status"] == "running"
    await _screenshot(gw, s1)
    assert (await gw.get(s2))["status"] == "running"
    assert await events_of(gw, s2, "resource_limit") == []
    await gw.stop(s1)
    await gw.stop(s2)


async def test_desktop_oom_killed_fails_the_session_with_the_reason(
        limited_local: Gateway) -> None:
    gw = limited_local
    s1 = (await gw.create_running(resolution="640x480"))["session_id"]
    s2 = (await gw.create_running(resolution="640x480"))["session_id"]
    # Make Xvfb the OOM killer's first choice (as a big X server would be).
    xvfb = [pid for pid in pod_processes(gw.state_dir)
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"Xvfb")
            and s1 in Path(f"/proc/{pid}/cgroup").read_text()]
    assert len(xvfb) == 1
    Path(f"/proc/{xvfb[0]}/oom_score_adj").write_text("1000")
    async with ApiWatch(gw, s2) as watch:
        hog = await run_in_app(gw, s1, ["python3", "-c", MEMORY_HOG], timeout=90)
        assert hog.code != 0  # the pod went down under it
        ended = await gw.wait_status(s1, {"failed", "stopped", "expired"})
        await _screenshot(gw, s2)
    assert watch.failures == [] and watch.ok > 0
    assert ended["status"] == "failed" and ended["stop_reason"] == "error"
    assert "memory limit" in ended["error"] and "OOM-killed" in ended["error"], ended["error"]
    assert "the app sandbox exited (killed by SIGKILL)" in ended["error"], ended["error"]
    assert "Xvfb exited with 137" in ended["error"], ended["error"]
    await wait_event(gw, s1, "resource_limit", kind="memory")
    assert (await gw.get(s2))["status"] == "running"
    assert gw.extra["app"][MANAGER].get(s2).status.value == "running"
    await gw.stop(s2)
