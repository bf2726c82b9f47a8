"""The warm pool on real parts: real Xvfb, Chromium, bubblewrap sandboxes, namespaces.

A claimed pooled session must look like a cold one through the API (``from_pool``
aside): its resolution, start URL, network mode, recording and tokens are the
session's own. The pool refills after claims, replaces stale pods, and a gateway
killed with SIGKILL leaves no pooled pod behind once it is started again.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gateway.appkeys import MANAGER
from gateway.backends.cgroup import Cgroup
from gateway.backends.network import list_namespaces
from gateway.sessions.pool import WarmPool
from tests.gateway.test_network import _host_addresses, _probe, host_listener, outside
from tests.gateway_fixtures import (
    API_TOKEN,
    Gateway,
    in_process_gateway,
    start_served_gateway,
    stop_served_gateway,
    wait_no_pod_processes,
)

__all__ = ["host_listener", "outside"]  # fixtures used here

START_URL = "http://start.invalid/pooled?from=test"
POOL_OPTS: dict[str, Any] = {"pool_max_load": 1000.0}
"""The test machine is shared and often loaded: refills must not wait for calm."""


class PoolLog(logging.Handler):
    """Ids of every pod the pool made warm (from its log), to check none is left."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.warm: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.match(r"warm pool: pod (\S+) warm", record.getMessage())
        if match:
            self.warm.append(match.group(1))


@pytest.fixture
def pool_log() -> Iterator[PoolLog]:
    handler = PoolLog()
    logger = logging.getLogger("gateway.sessions.pool")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def pod_left(sid: str) -> list[str]:
    """What is left of pod *sid* on this machine: cgroups, namespace, processes."""
    left = [f"cgroup {name}" for name in (f"{sid}.app", f"{sid}.agent") if Cgroup(name).exists()]
    if "vr-" + sid in list_namespaces():
        left.append(f"netns vr-{sid}")
    return left


async def wait_warm(pool: WarmPool, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while pool.ready_count() < n:
        assert time.monotonic() < deadline, f"pool not warm: {pool.describe()} {pool.counters}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def pool_gateway(tmp_path: Path, pool_log: PoolLog) -> AsyncIterator[Gateway]:
    """Full desktop (fluxbox, xterm, Chromium), one warm pod."""
    async for gw in in_process_gateway(tmp_path, pool_size=1, **POOL_OPTS):
        gw.extra["pool_log"] = pool_log
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []
    assert {sid: pod_left(sid) for sid in pool_log.warm if pod_left(sid)} == {}


@pytest.fixture
async def light_pool_gateway(tmp_path: Path, pool_log: PoolLog) -> AsyncIterator[Gateway]:
    """Xvfb + xterm only, a pool of 640x480 pods (network tests type into the xterm)."""
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), pool=(("640x480", 1),),
                                       **POOL_OPTS):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []
    assert {sid: pod_left(sid) for sid in pool_log.warm if pod_left(sid)} == {}


async def _get_json(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> Any:
    async with gw.http.get(gw.url(path), headers=headers or gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _screen_size(gw: Gateway, sid: str) -> tuple[int, int]:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        image = Image.open(io.BytesIO(await resp.read()))
        return image.size


async def _page_urls(gw: Gateway, sid: str) -> list[str]:
    """URLs of the page targets, once Chromium has its start page (it may still be
    starting in a cold session: the DevTools relay answers 502 until then)."""
    deadline = time.monotonic() + 60
    path = f"/api/visual-sessions/{sid}/cdp/json/list"
    while True:
        async with gw.http.get(gw.url(path), headers=gw.auth) as resp:
            assert resp.status in (200, 502), await resp.text()
            targets = await resp.json() if resp.status == 200 else []
        urls = [t["url"] for t in targets if t.get("type") == "page"]
        if urls and "about:blank" not in urls or time.monotonic() > deadline:
            return urls
        await asyncio.sleep(0.2)


def _events(gw: Gateway, sid: str) -> list[dict[str, Any]]:
    path = gw.state_dir / "sessions" / sid / "logs" / "events.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _recording_started(gw: Gateway, sid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        found = [e for e in _events(gw, sid)
                 if e["type"] == "recording" and e.get("status") == "started"]
        if found:
            return found[0]
        assert time.monotonic() < deadline, _events(gw, sid)
        await asyncio.sleep(0.2)


async def test_claimed_session_is_like_a_cold_one(pool_gateway: Gateway) -> None:
    gw = pool_gateway
    manager = gw.extra["app"][MANAGER]
    await wait_warm(manager.pool, 1)
    body = {"resolution": "1280x720", "network": "none", "start_url": START_URL,
            "enable_recording": True, "timeout_minutes": 7, "idle_timeout_minutes": 3}
    claimed = await gw.create_running(**body)
    cold = await gw.create_running(**body)
    assert claimed["from_pool"] is True and cold["from_pool"] is False
    volatile = {"session_id", "created_at", "started_at", "expires_at", "urls", "from_pool",
                "tokens", "viewers"}
    assert ({k: v for k, v in claimed.items() if k not in volatile}
            == {k: v for k, v in cold.items() if k not in volatile})
    for session in (claimed, cold):
        sid = session["session_id"]
        # resolution applied (the pooled Xvfb started at 1920x1080)
        assert await _screen_size(gw, sid) == (1280, 720)
        # start_url loaded, in the only tab
        assert await _page_urls(gw, sid) == [START_URL]
        # recording and the event log begin at the claim (the create call)
        created = _ts(session["created_at"])
        events = _events(gw, sid)
        assert events[0]["id"] == 1 and events[0]["status"] == "starting"
        assert _ts(events[0]["ts"]) >= created
        assert _ts((await _recording_started(gw, sid))["started_at"]) >= created
        startup = [e for e in events if e["type"] == "startup"]
        assert len(startup) == 1 and startup[0]["from_pool"] is session["from_pool"]
        assert startup[0]["spans_ms"]["total"] > 0
    # tokens: minted at claim; another session's token opens nothing here
    pooled_sid = claimed["session_id"]
    other_view = {"Authorization": f"Bearer {cold['tokens']['view']}"}
    async with gw.http.get(gw.url(f"/api/visual-sessions/{pooled_sid}/screenshot"),
                           headers=other_view) as resp:
        assert resp.status in (401, 403), resp.status
    own_view = {"Authorization": f"Bearer {claimed['tokens']['view']}"}
    async with gw.http.get(gw.url(f"/api/visual-sessions/{pooled_sid}/screenshot"),
                           headers=own_view) as resp:
        assert resp.status == 200
    # an action lands in a claimed session
    async with gw.http.post(gw.url(f"/api/visual-sessions/{pooled_sid}/actions"),
                            json={"action": "mouse_move", "coordinate": [321, 123]},
                            headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["cursor"] == [321, 123]
    metrics = await _metrics(gw)
    assert 'visual_runtime_pool_claims_total 1' in metrics
    assert 'visual_runtime_start_span_seconds_count{span="total",from_pool="true"} 1' in metrics
    assert 'visual_runtime_start_span_seconds_count{span="total",from_pool="false"} 1' in metrics


async def _metrics(gw: Gateway) -> str:
    async with gw.http.get(gw.url("/metrics"), headers=gw.auth) as resp:
        return await resp.text()


@pytest.mark.parametrize("network", ["none", "egress"])
async def test_claimed_session_network_is_enforced(
    light_pool_gateway: Gateway, outside: tuple[str, int],
    host_listener: tuple[int, list[str]], network: str,
) -> None:
    gw = light_pool_gateway
    manager = gw.extra["app"][MANAGER]
    port, seen = host_listener
    out_ip, out_port = outside
    await wait_warm(manager.pool, 1)
    session = await gw.create_running(resolution="640x480", network=network)
    assert session["from_pool"] is True
    gateway_port = int(gw.base_url.rsplit(":", 1)[1])
    targets = [f"{out_ip}:{out_port}", f"127.0.0.1:{gateway_port}",
               *(f"{addr}:{port}" for addr in _host_addresses())]
    pod = manager.get(session["session_id"]).pod
    if network == "egress":
        targets.append(f"{pod['egress']['host_ip']}:{port}")
    result = await _probe(gw, session["session_id"], targets)
    expected_out = "open" if network == "egress" else "closed"
    assert result.pop(f"{out_ip}:{out_port}") == expected_out, result
    assert set(result.values()) == {"closed"}, result
    assert seen == []


async def test_pool_refills_after_claims(tmp_path: Path, pool_log: PoolLog) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), pool=(("800x600", 2),),
                                       **POOL_OPTS):
        pool = gw.extra["app"][MANAGER].pool
        await wait_warm(pool, 2)
        first = set(pool_log.warm)
        a = await gw.create_running(resolution="800x600")
        b = await gw.create_running(resolution="640x480")
        assert {a["session_id"], b["session_id"]} == first
        assert a["from_pool"] and b["from_pool"]
        await wait_warm(pool, 2)
        assert len(set(pool_log.warm) - first) == 2
        # too large for the key: a cold start (and no pod is used for it)
        c = await gw.create_running(resolution="1024x768")
        assert c["from_pool"] is False and pool.ready_count() == 2
        metrics = await _metrics(gw)
        assert 'visual_runtime_pool_pods{key="800x600",state="ready"} 2' in metrics
    assert {sid: pod_left(sid) for sid in pool_log.warm if pod_left(sid)} == {}


async def test_stale_pods_are_replaced(tmp_path: Path, pool_log: PoolLog) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), pool=(("640x480", 1),),
                                       pool_max_age_s=6.0, **POOL_OPTS):
        pool = gw.extra["app"][MANAGER].pool
        await wait_warm(pool, 1)
        old = pool_log.warm[0]
        deadline = time.monotonic() + 90
        while (pool.counters["replaced_stale"] < 1 or pool.ready_count() < 1
               or len(pool_log.warm) < 2):
            assert time.monotonic() < deadline, pool.counters
            await asyncio.sleep(0.2)
        assert pod_left(old) == []
        assert not (gw.state_dir / "sessions" / old).exists()
        assert pool_log.warm[1] != old and pool.ready_count() == 1
    assert {sid: pod_left(sid) for sid in pool_log.warm if pod_left(sid)} == {}


def _pool_file(state_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((state_dir / "pool.json").read_text()))
    except (OSError, ValueError):
        return {}


def _pids_of(sid: str) -> set[int]:
    return Cgroup(f"{sid}.app").pids() | Cgroup(f"{sid}.agent").pids()


def test_sigkill_with_a_full_pool_leaves_no_orphan(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ("--apps", "xterm", "--pool", "640x480=2", "--pool-max-load", "1000")
    proc, _ = start_served_gateway(state, *args)
    try:
        deadline = time.monotonic() + 120
        while True:
            pods = _pool_file(state)
            if len(pods) == 2 and all(p["ready"] for p in pods.values()):
                break
            assert time.monotonic() < deadline, pods
            time.sleep(0.2)
        for sid in pods:
            assert _pids_of(sid), f"pooled pod {sid} has no processes"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # The pods outlive the gateway (their own process groups) ...
    assert all(_pids_of(sid) for sid in pods)
    proc, _ = start_served_gateway(state, "--apps", "xterm")  # ... until it is back
    try:
        for sid in pods:
            assert pod_left(sid) == [], sid
            assert not _pids_of(sid)
            assert not (state / "sessions" / sid).exists()
        assert _pool_file(state) == {}
    finally:
        stop_served_gateway(proc)


@pytest.mark.parametrize(("args", "message"), [
    (("--max-sessions", "4", "--pool-size", "5"), "larger than max_sessions"),
    (("--pool", "1280x720/egress=1"), "unknown pool key '1280x720/egress'"),
    (("--pool", "huge=1"), "unknown pool key 'huge'"),
    (("--backend", "docker", "--pool", "1280x720/wifi=1"), "unknown pool key"),
])
def test_bad_pool_settings_are_a_clear_startup_error(tmp_path: Path, args: tuple[str, ...],
                                                     message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--state-dir",
         str(tmp_path / "state"), "--token", API_TOKEN, *args],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "pool.json").exists()
