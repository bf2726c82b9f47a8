"""The local backend's sandboxing, read back from the kernel for a live session."""

from __future__ import annotations

import os
import re
from pathlib import Path

from gateway.appkeys import MANAGER
from gateway.backends.cgroup import Cgroup
from tests.gateway_fixtures import Gateway, pod_processes


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


async def test_app_sandbox_and_agent_are_confined(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480", network="none")
    sid = session["session_id"]
    pod = gw.extra["app"][MANAGER].get(sid).pod
    uid_app, uid_agent = pod["uid_app"], pod["uid_agent"]
    assert uid_app >= 200_000 and uid_agent == uid_app + 1

    pids = pod_processes(gw.state_dir)
    by_role: dict[str, list[int]] = {"app": [], "agent": []}
    for pid in pids:
        match = re.search(r"/visual-runtime/[^/.]+\.(app|agent)", Path(f"/proc/{pid}/cgroup").read_text())
        assert match
        by_role[match.group(1)].append(pid)
    xvfb = [p for p in by_role["app"] if _cmdline(p).startswith("Xvfb")]
    xterm = [p for p in by_role["app"] if _cmdline(p).startswith("xterm")]
    agent = [p for p in by_role["agent"]
             if "python" in _cmdline(p).split()[0] and "-m agent_side" in _cmdline(p)]
    assert len(xvfb) == 1 and len(xterm) == 1 and len(agent) == 1

    for pid in xvfb + xterm:
        st = _status(pid)
        assert st["Uid"].split() == [str(uid_app)] * 4
        assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0
        assert st["NoNewPrivs"] == "1"
        for kind in ("pid", "ipc", "mnt", "uts", "net"):
            assert _ns(pid, kind) != _ns("self", kind), kind
    st = _status(agent[0])
    assert st["Uid"].split() == [str(uid_agent)] * 4
    assert int(st["CapEff"], 16) == 0 and st["NoNewPrivs"] == "1"
    # The runtime agent shares only the IPC namespace with the desktop, and the
    # host network (viewers must reach it).
    assert _ns(agent[0], "ipc") == _ns(xvfb[0], "ipc")
    assert _ns(agent[0], "net") == _ns("self", "net")
    assert _ns(agent[0], "mnt") not in (_ns("self", "mnt"), _ns(xvfb[0], "mnt"))

    # cgroup limits as configured (GatewayConfig defaults: 2 GiB, 1 CPU, 512 pids).
    cg = Cgroup(f"{sid}.app")
    if cg.version == 1:
        mem, cpu, pids_dir = cg.dirs
        assert int((mem / "memory.limit_in_bytes").read_text()) == 2048 * 1024 * 1024
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 100_000
        assert int((pids_dir / "pids.max").read_text()) == 512
    else:
        d = cg.dirs[0]
        assert int((d / "memory.max").read_text()) == 2048 * 1024 * 1024
        assert (d / "cpu.max").read_text().split() == ["100000", "100000"]
        assert int((d / "pids.max").read_text()) == 512
    assert set(by_role["app"]) <= cg.pids()

    # HOME is private and owned by the session user; the host's files are not visible.
    home = gw.state_dir / "sessions" / sid / "home"
    assert home.stat().st_uid == uid_app
    root = Path(f"/proc/{xterm[0]}/root")
    assert not (root / "root").exists() or not any((root / "root").iterdir())
    assert not (root / str(gw.state_dir).lstrip("/")).exists()
    await gw.stop(sid)
