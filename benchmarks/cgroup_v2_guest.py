"""A session round trip on whatever cgroup hierarchy this machine has (run by the cgroup v2 guest).

::

    python -m benchmarks.cgroup_v2_guest [--out FILE]

Not a module of the suite: ``scripts/cgroup-v2-vm-guest.sh`` runs it inside the
QEMU guest that ``benchmarks/cgroup_v2_vm.py`` boots. It runs the gateway
(local backend, ``create_app`` on a real TCP port, in this process so that the
start timeout can be raised for an emulated guest), then with the client
library: creates a session, reads the pod's two cgroups (their limit files and
which processes are in them), takes a screenshot, runs actions (type into the
xterm, a click), stops the session, and looks for anything left (processes in
the pod's cgroups, cgroup directories, network namespaces, mounts of the state
dir). Prints one JSON object and exits 0 only if every step passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.backends.cgroup import CGROUP_ROOT, cgroup_version, list_cgroups  # noqa: E402
from gateway.backends.network import list_namespaces  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from visual_runtime_client import VisualRuntimeClient  # noqa: E402

LIMIT_FILES_V2 = ("memory.max", "memory.swap.max", "cpu.max", "pids.max")
LIMIT_FILES_V1 = ("memory/memory.limit_in_bytes", "cpu/cpu.cfs_quota_us", "pids/pids.max")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cgroup_limits(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if cgroup_version() == 2:
        d = CGROUP_ROOT / "visual-runtime" / name
        for f in LIMIT_FILES_V2:
            try:
                out[f] = (d / f).read_text().strip()
            except OSError as e:
                out[f] = f"unreadable: {e.strerror}"
    else:
        for f in LIMIT_FILES_V1:
            controller, _, file = f.partition("/")
            try:
                out[f] = (CGROUP_ROOT / controller / "visual-runtime" / name / file).read_text().strip()
            except OSError as e:
                out[f] = f"unreadable: {e.strerror}"
    return out


def processes_in(sid: str) -> dict[str, list[str]]:
    """``{"app"|"agent": [command names]}`` of processes whose cgroup is the pod's."""
    found: dict[str, list[str]] = {"app": [], "agent": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cg = (entry / "cgroup").read_text()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        m = re.search(rf"/visual-runtime/{re.escape(sid)}\.(app|agent)\b", cg)
        if m:
            found[m.group(1)].append(comm)
    return {k: sorted(set(v)) for k, v in found.items()}


def leftovers(sid: str, state_dir: Path) -> dict[str, list[str]]:
    procs = processes_in(sid)
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(state_dir) in line]
    return {"processes": procs["app"] + procs["agent"],
            "cgroups": [c for c in list_cgroups() if c.startswith(sid + ".")],
            "netns": [n for n in list_namespaces() if sid in n],
            "mounts": mounts}


async def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not answer /healthz in time")


async def round_trip(work: Path, start_timeout: float) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    report: dict[str, Any] = {"cgroup_version": cgroup_version(), "steps": steps}

    def step(name: str, ok: bool, **detail: Any) -> None:
        steps.append({"step": name, "ok": ok, **detail})
        print(f"{'ok  ' if ok else 'FAIL'} {name} {json.dumps(detail)}", flush=True)

    state_dir, token, port = work / "state", secrets.token_urlsafe(24), free_port()
    url = f"http://127.0.0.1:{port}"
    # In process (create_app, as `visual-runtime serve` wires it) so the start timeout
    # can follow --start-timeout: an emulated guest needs more than the 30 s default.
    config = GatewayConfig(state_dir=state_dir, token=token, port=port,
                           runtime_dir=work / "run", apps=("xterm",),
                           start_timeout_s=start_timeout)
    runner = web.AppRunner(create_app(config, token))
    sid = ""
    try:
        t0 = time.monotonic()
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await wait_healthy(url)
        step("gateway answers /healthz", True, seconds=round(time.monotonic() - t0, 2))
        async with VisualRuntimeClient(url, token, timeout=90) as client:
            t0 = time.monotonic()
            session = await client.create_session(resolution="800x600")
            sid = str(session.info["session_id"])
            # ?wait=running holds 30 s at most; an emulated (TCG) guest may need longer
            while session.status == "starting" and time.monotonic() - t0 < start_timeout + 30:
                await session.refresh(wait=True)
            step("create", session.status == "running", session_id=sid, status=session.status,
                 error=session.info.get("error"), seconds=round(time.monotonic() - t0, 2))
            if session.status != "running":
                return report
            procs = processes_in(sid)
            limits = {n: cgroup_limits(f"{sid}.{n}") for n in ("app", "agent")}
            step("pod processes are in the pod's cgroups",
                 bool(procs["app"]) and bool(procs["agent"])
                 and "Xvfb" in procs["app"] and "python" in " ".join(procs["agent"]),
                 processes=procs)
            app_limits = limits["app"]
            want = ({"memory.max": str(2048 * 1024 * 1024), "cpu.max": "100000 100000",
                     "pids.max": "512", "memory.swap.max": "0"} if cgroup_version() == 2 else {})
            step("limits written", all(app_limits.get(k) == v for k, v in want.items()),
                 limits=limits)
            png = await session.screenshot()
            w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
            step("screenshot", png[:8] == b"\x89PNG\r\n\x1a\n" and (w, h) == (800, 600),
                 bytes=len(png), size=f"{w}x{h}")
            cursor = await session.click(400, 300)
            step("action: click", tuple(cursor) == (400, 300), cursor=list(cursor))
            await session.type_text("echo cgroup-v2 > /dev/null\n")
            after = await session.screenshot()
            step("action: type into xterm (screen changed)", after != png,
                 bytes=len(after))
            t0 = time.monotonic()
            stopped = await session.stop()
            step("stop", stopped.get("status") == "stopped", status=stopped.get("status"),
                 stop_reason=stopped.get("stop_reason"), seconds=round(time.monotonic() - t0, 2))
            deadline = time.monotonic() + 10
            left = leftovers(sid, state_dir)
            while any(left.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                left = leftovers(sid, state_dir)
            step("nothing left", not any(left.values()), left=left)
    except Exception as e:  # noqa: BLE001 - reported as a failed step
        step("error", False, error=f"{type(e).__name__}: {e}")
    finally:
        await runner.cleanup()  # what SIGTERM does to `visual-runtime serve`
        if sid:
            left = leftovers(sid, state_dir)
            steps.append({"step": "after gateway exit", "ok": not any(left.values()),
                          "left": left})
    report["ok"] = all(s["ok"] for s in steps) and len(steps) >= 9
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--start-timeout", type=float, default=30.0,
                        help="the gateway's start timeout, s (default %(default)s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (the local backend needs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vr-rt-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        logging.basicConfig(filename=work / "gateway.log", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        report = asyncio.run(round_trip(work, args.start_timeout))
        gw_log = (work / "gateway.log").read_text(errors="replace").splitlines()
        report["gateway_log_tail"] = gw_log[-30:]
        for log in sorted(work.glob("state/sessions/*/logs/*.log")):
            report[f"pod {log.name} tail"] = log.read_text(errors="replace").splitlines()[-15:]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
