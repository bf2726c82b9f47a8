"""A session cannot fill the host's disk (issue 20, finding H3).

Each session of the ``local`` and ``docker`` backends gets its own filesystem of
``session_disk_mb`` (a sparse ext4 image, loop-mounted by the gateway:
``gateway.backends.session_disk``). Here the session's own user, INSIDE its
app sandbox (``tests.security.helpers.run_in_app``), runs ``fallocate`` and
``dd`` far past that size into its shared folder:

* both stop at the quota with ``ENOSPC``; the host's disk loses no more than
  the quota (the image's blocks), and the session goes on running;
* the session gets a ``resource_limit`` event of kind ``disk``;
* an upload into the full disk gets a 507 problem and leaves no partial file
  (with and without ``Content-Length``);
* stopping the full session leaves nothing: no mount in /proc/self/mountinfo,
  no loop device (``losetup -a``), no image, no pod process or container,
  while the shared folder's files are still listed after the end (a sparse
  8 GiB file among them costs the host no more than its data);
* a session started while another's disk is full sees only its own disk;
* after a gateway crash (SIGKILL) the next gateway re-adopts the mounted disk,
  reports it filling, and removes it at stop; ``doctor`` makes one to check.

Before the fix the writes landed on the state filesystem: ``fallocate`` got
its 512 MiB and every assertion on ENOSPC and host usage failed.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.backends.session_disk import DiskWatch, create_disk, release_disk, upload_staging_dir
from gateway.cli.doctor import check_session_disk
from gateway.config import GatewayConfig
from tests.gateway_fixtures import (
    API_TOKEN,
    Gateway,
    in_process_gateway,
    owned,
    start_served_gateway,
    stop_served_gateway,
    wait_no_pod_processes,
)
from tests.recording.helpers import events_of, wait_event
from tests.security.helpers import run_in_app

pytestmark = pytest.mark.timeout(240)

QUOTA_MB = 64
MiB = 1024 * 1024


@pytest.fixture(params=["local", "docker"])
async def quota_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    backend = str(request.param)
    client = request.getfixturevalue("docker_client") if backend == "docker" else None
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), backend=backend,
                                       session_disk_mb=QUOTA_MB):
        gw.extra["backend"] = backend
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []
    if client is not None:
        assert owned(client, gw.state_dir) == ([], [])
    assert _loop_devices(gw.state_dir) == [] and _mounts(gw.state_dir) == []


def _mounts(state_dir: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(state_dir) in line]


def _loop_devices(state_dir: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(state_dir) in line]


def _host_bytes(root: Path) -> int:
    """Blocks *root*'s files hold on the host's filesystem (mounts below it not counted)."""
    dev = os.lstat(root).st_dev
    total = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == dev]
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if st.st_dev == dev:
                total += st.st_blocks * 512
    return total


def _host_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def test_a_session_fills_only_its_own_disk(quota_gateway: Gateway) -> None:
    gw = quota_gateway
    sid = (await gw.create_running(resolution="640x480", enable_recording=False))["session_id"]
    session_dir = gw.state_dir / "sessions" / sid
    free_before = _host_free(gw.state_dir)
    mounts = _mounts(gw.state_dir)
    assert len(mounts) == 1 and " ext4 " in mounts[0], mounts
    startup = (await events_of(gw, sid, "startup"))[0]
    assert startup["spans_ms"]["disk"] > 0, startup  # what making the disk cost

    # Far past the quota, as the session's user, in its sandbox.
    fill = await run_in_app(gw, sid, ["dd", "if=/dev/zero", "of=/home/user/Downloads/fill",
                                      "bs=1M", "count=256"], timeout=120)
    assert fill.code != 0 and "No space left on device" in fill.err, (fill.code, fill.err)
    written = int(fill.err.split(" bytes")[0].splitlines()[-1])
    assert (QUOTA_MB - 8) * MiB < written <= QUOTA_MB * MiB, fill.err
    big = await run_in_app(gw, sid, ["sh", "-c", "fallocate -l 512M Downloads/big; e=$?; "
                                     "rm -f Downloads/big; exit $e"])
    assert big.code != 0 and "No space left on device" in big.err, (big.code, big.err)

    # The host paid for the image's blocks only (768 MiB were asked for).
    assert _host_bytes(session_dir) <= (QUOTA_MB + 4) * MiB
    assert free_before - _host_free(gw.state_dir) < 384 * MiB  # others share this disk

    # A session started now (its sandbox's mount namespace is a copy of the host's, with
    # the full disk in it) neither sees that disk nor keeps it mounted after its stop.
    other = (await gw.create_running(resolution="640x480", enable_recording=False))["session_id"]
    seen = await run_in_app(gw, other, ["sh", "-c", "ls Downloads; grep -c /dev/loop /proc/mounts"])
    assert seen.out.split() == ["1"], seen  # its own disk only

    event = await wait_event(gw, sid, "resource_limit", kind="disk", timeout=30)
    assert event["limit"] == f"{QUOTA_MB} MiB" and event["count"] == 1, event
    assert (await gw.get(sid))["status"] == "running"

    # Uploads into the full disk: 507, and nothing stays behind.
    base = gw.url(f"/api/visual-sessions/{sid}/files")
    async with gw.http.put(base + "/sized.bin", data=io.BytesIO(bytes(4 * MiB)),
                           headers=gw.auth) as resp:
        assert resp.status == 507, await resp.text()
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["title"] == "Session disk full"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield bytes(MiB)

    async with gw.http.put(base + "/streamed.bin", data=chunks(), headers=gw.auth) as resp:
        assert resp.status == 507, await resp.text()
    async with gw.http.get(base, headers=gw.auth) as resp:
        listed = {f["path"] for f in (await resp.json())["files"]}
    assert listed == {"fill"}, listed
    assert list(upload_staging_dir(session_dir).iterdir()) == []
    # A sparse file far larger than the disk (it holds no data blocks).
    sparse = await run_in_app(gw, sid, ["truncate", "-s", "8G", "Downloads/sparse"])
    assert sparse.code == 0, sparse

    # A full disk does not stop the stop: everything of it goes, the files stay listed.
    assert (await gw.stop(sid))["status"] == "stopped"
    assert [m for m in _mounts(gw.state_dir) if sid in m] == []
    assert [d for d in _loop_devices(gw.state_dir) if sid in d] == []
    assert len(_mounts(gw.state_dir)) == 1  # the other session's
    assert (await gw.get(other))["status"] == "running"
    assert await events_of(gw, other, "resource_limit") == []
    await gw.stop(other)
    assert _mounts(gw.state_dir) == [] and _loop_devices(gw.state_dir) == []
    assert not (session_dir / "disk.img").exists() and not (session_dir / "disk").exists()
    assert not (session_dir / "home").is_symlink()
    async with gw.http.get(base, headers=gw.auth) as resp:
        kept = {f["path"]: f["size"] for f in (await resp.json())["files"]}
    assert kept == {"fill": written, "sparse": 8 << 30}
    # Keeping the shared folder copied data, not holes: the host holds the data only.
    assert _host_bytes(session_dir) <= (QUOTA_MB + 4) * MiB


def test_doctor_makes_a_session_disk_or_says_why(tmp_path: Path) -> None:
    on = check_session_disk(GatewayConfig(state_dir=tmp_path / "state", session_disk_mb=32))
    assert on.ok and on.required and on.detail.startswith("32 MiB per session"), on
    assert _mounts(tmp_path) == [] and _loop_devices(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # its trial disk is gone
    off = check_session_disk(GatewayConfig(state_dir=tmp_path / "state", session_disk_mb=0))
    assert not off.ok and not off.required and "fill the state disk" in off.detail
    swarm = check_session_disk(GatewayConfig(backend="swarm", state_dir=tmp_path / "state"))
    assert not swarm.ok and swarm.detail.startswith("not on swarm"), swarm


async def test_a_crashed_gateways_session_disk_is_adopted_and_removed(tmp_path: Path) -> None:
    """SIGKILL leaves the pod and its mounted disk; the next gateway re-adopts both, reports
    the disk filling, and its stop removes the mount and loop device."""
    state_dir = tmp_path / "state"
    proc, base_url = await asyncio.to_thread(
        start_served_gateway, state_dir, "--apps", "xterm", "--session-disk-mb", str(QUOTA_MB))
    try:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(base_url + "/api/visual-sessions", headers=headers,
                                 json={"resolution": "640x480", "enable_recording": False}) as r:
                assert r.status == 201, await r.text()
                sid = (await r.json())["session_id"]
            async with http.get(base_url + f"/api/visual-sessions/{sid}?wait=running",
                                headers=headers) as r:
                assert (await r.json())["status"] == "running"
    finally:
        await asyncio.to_thread(stop_served_gateway, proc, signal.SIGKILL)  # no clean-up
    assert len(_mounts(state_dir)) == 1 and len(_loop_devices(state_dir)) == 1

    async for gw in in_process_gateway(tmp_path, apps=("xterm",), session_disk_mb=QUOTA_MB):
        assert (await gw.get(sid))["status"] == "running"
        fill = await run_in_app(gw, sid, ["dd", "if=/dev/zero", "of=Downloads/fill", "bs=1M",
                                          "count=256"], timeout=120)
        assert fill.code != 0 and "No space left on device" in fill.err, fill
        event = await wait_event(gw, sid, "resource_limit", kind="disk", timeout=30)
        assert event["limit"] == f"{QUOTA_MB} MiB"
        await gw.stop(sid)
        assert _mounts(state_dir) == [] and _loop_devices(state_dir) == []
    assert wait_no_pod_processes(state_dir) == []
    assert not (state_dir / "sessions" / sid / "disk.img").exists()


def test_each_filling_of_a_disk_counts_once(tmp_path: Path) -> None:
    """Full, freed, full again: two fillings; polls in between add nothing."""
    session_dir = tmp_path / "s"
    create_disk(session_dir, 16, os.getuid())
    watch = DiskWatch()
    try:
        fill = ["dd", "if=/dev/zero", f"of={session_dir}/home/fill", "bs=1M", "count=32"]
        assert watch.events("s", session_dir) == {}
        assert subprocess.run(fill, capture_output=True, check=False).returncode != 0
        assert watch.events("s", session_dir) == {"disk": 1}
        assert watch.events("s", session_dir) == {"disk": 1}
        (session_dir / "home" / "fill").unlink()
        assert watch.events("s", session_dir) == {"disk": 1}
        assert subprocess.run(fill, capture_output=True, check=False).returncode != 0
        assert watch.events("s", session_dir) == {"disk": 2}
    finally:
        release_disk(session_dir)
    assert watch.events("s", session_dir) == {"disk": 2}  # the last answer, then forgotten
    assert watch.events("s", session_dir) == {}
    assert _mounts(tmp_path) == [] and _loop_devices(tmp_path) == []
    assert sorted(p.name for p in session_dir.iterdir()) == ["home"]
