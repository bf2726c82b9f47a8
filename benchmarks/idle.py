"""Benchmark: CPU and memory of an idle session, against x11vnc on the same idle display.

One full session (Xvfb, fluxbox, xterm, Chromium on ``about:blank``; the
``local`` backend; recording off, as the baseline records nothing) is left
alone. Phases on that same display, in the same run, each measured over the
same window:

1. **ours** — one aiortc WHEP viewer connected (through a served gateway);
2. **x11vnc (tuned)** — the WebRTC viewer gone (the runtime agent then stops
   capturing), x11vnc ``-defer 5 -wait 5 -nowait_bog`` on the session's display
   with one VNC client requesting updates continuously (as noVNC does);
3. **x11vnc (default)** — the same with ``-shared -forever -ncache 0`` only;
4. (full mode) **ours** again; ours is the mean of 1 and 4, so a slow drift of
   Chromium's background work favours neither side.

Before phase 1 the pod must be quiet: Chromium running and the app sandbox
under 2 % of a core over 2 s (at least 20 s after start in full mode).

CPU is ``utime + stime`` from ``/proc/<pid>/stat`` of every process in the
pod's cgroups (app sandbox: Xvfb and the apps; runtime agent) and of x11vnc.
"Whole pod" for ours is Xvfb + apps + runtime agent; for the baseline it is
Xvfb + the same apps + x11vnc (the idle runtime agent is left out). x11vnc
reads the pod's display with ``XGetImage`` (``-noshm``: the pod's Xvfb lives in
another IPC namespace), as the project's own noVNC fallback does. Memory is
the summed RSS and PSS (``/proc/<pid>/smaps_rollup``) of the same processes.

Standalone: ``python -m benchmarks.idle [--quick]`` prints a table and writes
``benchmarks/results/idle.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    ServedGateway,
    census,
    cpu_map,
    cpu_pct,
    link_display,
    load_note,
    memory_mib,
    pod_pids,
    print_result,
    proc_name,
    wait_for,
    write_result,
)
from benchmarks.receiver import Receiver  # noqa: E402
from benchmarks.suite import Figure, Options, Result  # noqa: E402
from benchmarks.vncclient import RfbClient, X11vnc  # noqa: E402

RESOLUTION = "1600x900"
APPS = ("fluxbox", "xterm", "chromium")


async def _window(groups: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """CPU % of a core of each group of pids over *seconds*."""
    before = {name: cpu_map(pids) for name, pids in groups.items()}
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {name: cpu_pct(before[name], cpu_map(pids), elapsed) for name, pids in groups.items()}


def _by_name(pids: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pid in pids:
        name = proc_name(pid)
        counts[name] = counts.get(name, 0) + 1
    return counts


async def _settle(sid: str, min_s: float, timeout: float) -> float:
    """Wait until Chromium runs in the pod, at least *min_s*, and until the app sandbox
    uses < 2 % of a core over a 2 s window (Chromium's start-up work done, which goes
    on for a while after its window appears); returns the seconds waited."""
    t0 = time.monotonic()
    await wait_for(lambda: any(proc_name(p).startswith("chrom")
                               for p in pod_pids([sid])[sid]["app"]), timeout, "Chromium")
    while time.monotonic() - t0 < timeout:
        app = pod_pids([sid])[sid]["app"]
        quiet = (await _window({"app": app}, 2.0))["app"] < 2.0
        if quiet and time.monotonic() - t0 >= min_s:
            break
    return time.monotonic() - t0


async def _ours_phase(gw: ServedGateway, sid: str, window: float) -> dict[str, Any]:
    """One WebRTC viewer connected: CPU of the pod's parts and the gateway, memory."""
    receiver = Receiver()
    location = ""
    try:
        location = await gw.whep(sid, receiver.pc)
        await asyncio.wait_for(receiver.first_frame.wait(), 15)
        await asyncio.sleep(1.0)  # the viewer's first keyframe and refresh frames pass
        pods = pod_pids([sid])[sid]
        frames0 = receiver.frames
        cpu = await _window({"app": pods["app"], "agent": pods["agent"], "gateway": [gw.pid]},
                            window)
        return {"cpu": cpu, "frames_received": receiver.frames - frames0,
                "memory_app": memory_mib(pods["app"]), "memory_agent": memory_mib(pods["agent"]),
                "app_processes": _by_name(pods["app"]), "agent_processes": len(pods["agent"])}
    finally:
        if location:
            await gw.delete_path(location)
        await receiver.close()


async def _vnc_phase(gw: ServedGateway, sid: str, display: str, tuned: bool,
                     window: float) -> dict[str, Any]:
    """No WebRTC viewer; x11vnc on the pod's display with one continuous RFB client."""
    vnc = X11vnc(display, tuned=tuned, noshm=True)
    client = RfbClient()
    try:
        await vnc.start()
        await client.connect(vnc.socket_path)
        await asyncio.wait_for(client.first_update.wait(), 15)
        await asyncio.sleep(1.0)
        pods = pod_pids([sid])[sid]
        bytes0, updates0 = client.bytes, client.updates
        cpu = await _window({"app": pods["app"], "agent": pods["agent"], "x11vnc": [vnc.pid],
                             "gateway": [gw.pid]}, window)
        return {"cpu": cpu, "updates": client.updates - updates0,
                "bytes_per_s": (client.bytes - bytes0) / window,
                "memory_app": memory_mib(pods["app"]), "memory_x11vnc": memory_mib([vnc.pid])}
    finally:
        await client.aclose()
        await vnc.aclose()


def _mean_phase(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    out["cpu"] = {k: (a["cpu"][k] + b["cpu"][k]) / 2 for k in a["cpu"]}
    for key in ("memory_app", "memory_agent"):
        out[key] = {k: (a[key][k] + b[key][k]) / 2 for k in a[key]}
    return out


async def measure(opts: Options) -> Result:
    window = 3.0 if opts.quick else 15.0
    notes = [load_note("at start")]
    before = census()
    gw = ServedGateway(apps=APPS, name="idle")
    links: list[Path] = []
    phases: dict[str, dict[str, Any]] = {}
    sid = ""
    try:
        await gw.start()
        created = await gw.create_running(resolution=RESOLUTION, enable_recording=False)
        sid = created["session_id"]
        waited = await _settle(sid, 2.0 if opts.quick else 20.0, 6.0 if opts.quick else 90.0)
        notes.append(f"Chromium settled {waited:.1f} s after the session was running")
        display, links = link_display(gw.x_socket(sid))
        # full mode: ours, x11vnc tuned, x11vnc default, ours again (ours = the mean), so a
        # slow drift of Chromium's background work does not favour either side
        phases["ours (1)"] = await _ours_phase(gw, sid, window)
        phases["x11vnc (tuned)"] = await _vnc_phase(gw, sid, display, True, window)
        phases["x11vnc (default)"] = await _vnc_phase(gw, sid, display, False, window)
        if opts.quick:
            phases["ours"] = phases["ours (1)"]
        else:
            phases["ours (2)"] = await _ours_phase(gw, sid, window)
            phases["ours"] = _mean_phase(phases["ours (1)"], phases["ours (2)"])
    finally:
        for path in links:
            with contextlib.suppress(OSError):
                path.unlink()
        if sid:
            await gw.delete(sid)
        await gw.aclose()
    after = census(gw.session_ids)
    notes.append(f"processes before/after: ours {before['ours']}/{after['ours']}, "
                 f"machine {before['machine']}/{after['machine']}")
    if after["ours"] > before["ours"]:
        notes.append("WARNING: processes of this benchmark were left running")
    notes.append(load_note("at end"))
    return _result(phases, window, notes)


def _result(phases: dict[str, dict[str, Any]], window: float, notes: list[str]) -> Result:
    ours = phases["ours"]
    our_pod = ours["cpu"]["app"] + ours["cpu"]["agent"]
    our_mem = {k: ours["memory_app"][k] + ours["memory_agent"][k] for k in ("rss_mib", "pss_mib")}
    figures: list[Figure] = []
    for label in ("x11vnc (tuned)", "x11vnc (default)"):
        base = phases[label]
        base_pod = base["cpu"]["app"] + base["cpu"]["x11vnc"]
        figures += [
            Figure(f"idle session CPU, whole pod (Xvfb + apps + streamer), 1 viewer, vs {label}",
                   our_pod, "% of a core", base_pod, f"Xvfb + same apps + {label} + 1 VNC client",
                   target="<= baseline"),
            Figure(f"idle streamer CPU, runtime agent vs {label}, 1 viewer", ours["cpu"]["agent"],
                   "% of a core", base["cpu"]["x11vnc"], f"{label} + 1 VNC client"),
        ]
    tuned = phases["x11vnc (tuned)"]
    base_mem = {k: tuned["memory_app"][k] + tuned["memory_x11vnc"][k]
                for k in ("rss_mib", "pss_mib")}
    figures += [
        Figure("idle session memory PSS, whole pod", our_mem["pss_mib"], "MiB",
               base_mem["pss_mib"], "Xvfb + same apps + x11vnc (tuned)"),
        Figure("idle session memory RSS, whole pod", our_mem["rss_mib"], "MiB",
               base_mem["rss_mib"], "Xvfb + same apps + x11vnc (tuned)"),
        Figure("idle runtime agent memory PSS", ours["memory_agent"]["pss_mib"], "MiB",
               tuned["memory_x11vnc"]["pss_mib"], "x11vnc (tuned)"),
        Figure("idle gateway CPU, 1 viewer", ours["cpu"]["gateway"], "% of a core"),
    ]
    notes = [f"{window:.0f} s window per phase; full session {RESOLUTION} (fluxbox, xterm, "
             "Chromium on about:blank), recording off, local backend; CPU from /proc/<pid>/stat "
             f"(10 ms ticks: +-{100 * 0.01 / window:.2f} % of a core per process in this window)",
             "baseline x11vnc runs -noshm on the pod's display (XGetImage; the pod's Xvfb is in "
             "another IPC namespace) with one RFB client asking for ZRLE updates continuously",
             *notes]
    return Result(benchmark="idle", title="Idle session: CPU and memory vs x11vnc (same display, "
                  "same run)", figures=figures, series={"phases": phases}, notes=notes)


def run(opts: Options) -> Result:
    return asyncio.run(measure(opts))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=Options().out_dir)
    args = parser.parse_args()
    t0 = time.monotonic()
    result = run(Options(quick=args.quick, out_dir=args.out_dir))
    result.seconds = time.monotonic() - t0
    print_result(result)
    print(f"\nwrote {write_result(result, args.out_dir)} ({result.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
