"""Docker pods take their uids from the reserved range, a pair per session (issue 20, H5).

Two docker sessions of a served gateway run as two different uid pairs of
``uid_base``'s range (reserved in /etc/subuid and /etc/subgid), on the host
as well as in the containers' config and labels; each one's shared folder is
its own uid's, mode 0700, so the other pod's uid cannot open a file in it even
when handed the folder (a descriptor opened by root, then the uid dropped).
The gateway is then killed (SIGKILL: no clean-up) and a new one re-adopts both
pods with the uids their containers carry; a third session started next gets
a pair of its own, and a stopped session's slot (so its pair) is freed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from gateway.appkeys import CONFIG, MANAGER
from gateway.backends.docker import LABEL_UID, gateway_label
from gateway.backends.uidrange import check_range, pod_range
from gateway.config import GatewayConfig
from tests.docker.conftest import pod_uids
from tests.gateway_fixtures import (
    API_TOKEN,
    in_process_gateway,
    owned,
    start_served_gateway,
    stop_served_gateway,
)

pytestmark = pytest.mark.timeout(300)

OPEN_AS = r'''
import json, os, sys
folder, name, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # as root: the folder is in hand
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
try:
    os.close(os.open(name, os.O_RDONLY, dir_fd=fd))
    print(json.dumps("ok"))
except OSError as e:
    print(json.dumps(type(e).__name__))
'''


def _open_as(folder: Path, name: str, uid: int) -> str:
    out = subprocess.run([sys.executable, "-c", OPEN_AS, str(folder), name, str(uid)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return str(json.loads(out))


def _containers(client: docker.DockerClient, state_dir: Path, sid: str) -> dict[str, Any]:
    prefix = f"vr-{gateway_label(state_dir)[:8]}-{sid}-"
    return {role: client.containers.get(prefix + role) for role in ("app", "agent")}


def _host_uid(container: Any) -> int:
    """The real uid of the container's first process, as the host sees it."""
    container.reload()
    status = Path(f"/proc/{container.attrs['State']['Pid']}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("Uid:"))
    uids = {int(u) for u in line.split()[1:]}
    assert len(uids) == 1, line
    return uids.pop()


async def test_docker_pods_get_their_own_uids_from_the_reserved_range(
        tmp_path: Path, docker_client: docker.DockerClient) -> None:
    state_dir = tmp_path / "state"
    base = GatewayConfig().uid_base
    start, count = pod_range(base)
    proc, base_url = await asyncio.to_thread(
        start_served_gateway, state_dir, "--backend", "docker", "--apps", "xterm")
    sids: list[str] = []
    uids: dict[str, tuple[int, int]] = {}
    try:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(base_url + "/api/visual-sessions",
                                     json={"resolution": "640x480", "network": "none"},
                                     headers=headers) as resp:
                    assert resp.status == 201, await resp.text()
                    sids.append((await resp.json())["session_id"])
            for sid in sids:
                async with http.get(base_url + f"/api/visual-sessions/{sid}?wait=running",
                                    headers=headers) as resp:
                    assert (await resp.json())["status"] == "running"
        assert check_range(base) == []  # the range is reserved, nobody else's overlaps
        for sid in sids:
            pods = _containers(docker_client, state_dir, sid)
            app, agent = (int(pods[r].labels[LABEL_UID]) for r in ("app", "agent"))
            assert base <= app and agent == app + 1 and agent < start + count, (app, agent)
            assert (app - base) % 2 == 0
            for role, uid in (("app", app), ("agent", agent)):
                assert pods[role].attrs["Config"]["User"] == f"{uid}:{uid}"
                assert _host_uid(pods[role]) == uid
            uids[sid] = (app, agent)
        (a, b) = sids
        assert set(uids[a]).isdisjoint(uids[b]), uids

        # Each pod writes a file in its shared folder, as its own uid.
        folders = {sid: state_dir / "sessions" / sid / "home" / "Downloads" for sid in sids}
        for sid in sids:
            code, out = _containers(docker_client, state_dir, sid)["app"].exec_run(
                ["sh", "-c", "echo mine > /home/user/Downloads/own.txt"])
            assert code == 0, out
            st = folders[sid].stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uids[sid][0], uids[sid][0],
                                                                 0o700)
            assert (folders[sid] / "own.txt").stat().st_uid == uids[sid][0]
        for sid, other in ((a, b), (b, a)):
            assert _open_as(folders[sid], "own.txt", uids[sid][0]) == "ok"  # the probe works
            assert _open_as(folders[sid], "own.txt", uids[other][0]) == "PermissionError"
            assert _open_as(folders[sid], "own.txt", uids[other][1]) == "PermissionError"
    finally:
        # A crash: no clean-up runs, the pods stay.
        await asyncio.to_thread(stop_served_gateway, proc, signal.SIGKILL)
    assert len(owned(docker_client, state_dir)[0]) == 4

    async for gw in in_process_gateway(tmp_path, backend="docker", apps=("xterm",)):
        manager = gw.extra["app"][MANAGER]
        for sid in sids:
            assert (await gw.get(sid))["status"] == "running"
            assert pod_uids(gw, sid) == uids[sid]  # re-adopted with the uids its labels carry
        third = (await gw.create_running(resolution="640x480", network="none"))["session_id"]
        new = pod_uids(gw, third)
        assert base <= new[0] and new[1] < start + count
        assert not set(new) & {u for pair in uids.values() for u in pair}, (new, uids)
        slot_file = gw.extra["app"][CONFIG].runtime_dir / "slots" / str(manager.get(third).slot)
        assert slot_file.read_text() == third
        await gw.stop(third)
        await gw.wait_status(third, {"stopped"})
        assert not slot_file.exists() or slot_file.read_text() != third  # the pair is free
        for sid in sids:
            await gw.stop(sid)
            await gw.wait_status(sid, {"stopped"})
    assert owned(docker_client, state_dir) == ([], [])
