"""Benchmark: start-to-first-frame (and create -> ``running``) per backend, local vs docker.

Each backend runs behind its own served gateway (``visual-runtime serve`` in a
child process; full desktop: fluxbox, xterm, Chromium), one session at a time,
default session settings at 1600x900. Per run:

* ``t0`` just before ``POST /api/visual-sessions``;
* **running**: ``GET .../{id}?wait=running`` returns ``running`` (the API's
  definition of up: the display runs and the runtime agent can serve a frame);
* **first frame**: an aiortc viewer offers ``POST .../whep`` as soon as the
  session is running, and the first decoded video frame comes out of its
  decoder (marker-bit receiver of ``glass_to_glass.py``).

The session is deleted before the next run. Baselines, same run: the other
backend (docker for local), and x11vnc on a fresh Xvfb — ``Xvfb`` launched,
x11vnc (tuned) started on it, an RFB client connected, until its first
framebuffer update is read (no desktop apps, no sandbox: a lower bound for a
bare VNC desktop).

Standalone: ``python -m benchmarks.session_start [--quick] [--runs N]`` prints a
table and writes ``benchmarks/results/session_start.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.glass_to_glass import Receiver  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    ServedGateway,
    census,
    load_note,
    print_result,
    write_result,
)
from benchmarks.suite import Figure, Options, Result  # noqa: E402
from benchmarks.vncclient import RfbClient, X11vnc  # noqa: E402

RESOLUTION = "1600x900"
BACKENDS = ("local", "docker")
X11VNC_BASELINE = "Xvfb + x11vnc (tuned) + VNC client, launch -> first update (no apps)"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _docker_leftovers(state_dir: Path) -> int:
    import docker

    from gateway.backends.docker import LABEL_GATEWAY, gateway_label

    client = docker.from_env()
    try:
        label = f"{LABEL_GATEWAY}={gateway_label(state_dir)}"
        return (len(client.containers.list(all=True, filters={"label": label}))
                + len(client.networks.list(filters={"label": label})))
    finally:
        client.close()


async def measure_backend(backend: str, runs: int) -> dict[str, Any]:
    gw = ServedGateway(backend=backend, apps=("fluxbox", "xterm", "chromium"),
                       name=f"start-{backend}")
    running: list[float] = []
    first: list[float] = []
    leftovers = 0
    try:
        await gw.start()
        for _ in range(runs):
            t0 = time.perf_counter()
            created = await gw.create(resolution=RESOLUTION)
            sid = created["session_id"]
            try:
                await gw.wait_running(sid)
                running.append(time.perf_counter() - t0)
                receiver = Receiver()
                try:
                    location = await gw.whep(sid, receiver.pc)
                    await asyncio.wait_for(receiver.first_frame.wait(), 30)
                    first.append(time.perf_counter() - t0)
                    await gw.delete_path(location)
                finally:
                    await receiver.close()
            finally:
                await gw.delete(sid)
    finally:
        await gw.aclose()
        if backend == "docker":
            leftovers = await asyncio.to_thread(_docker_leftovers, gw.state_dir)
    return {"backend": backend, "runs": runs, "running_s": running, "first_frame_s": first,
            "running_p50": pct(running, 0.5), "running_p95": pct(running, 0.95),
            "first_frame_p50": pct(first, 0.5), "first_frame_p95": pct(first, 0.95),
            "docker_leftovers": leftovers}


async def x11vnc_once() -> float:
    """Fresh Xvfb -> x11vnc (tuned) -> RFB client -> first framebuffer update, in seconds."""
    t0 = time.perf_counter()
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0",
                             f"{RESOLUTION}x24", "-nolisten", "tcp", "-noreset"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    vnc: X11vnc | None = None
    client: RfbClient | None = None
    try:
        with os.fdopen(read_fd, "rb") as reader:
            number = (await asyncio.to_thread(reader.readline)).strip().decode()
        if not number:
            raise RuntimeError("Xvfb did not start")
        vnc = X11vnc(f":{number}", tuned=True, noshm=False)
        await vnc.start()
        client = RfbClient()
        await client.connect(vnc.socket_path)
        await asyncio.wait_for(client.first_update.wait(), 15)
        return time.perf_counter() - t0
    finally:
        if client is not None:
            await client.aclose()
        if vnc is not None:
            await vnc.aclose()
        xvfb.terminate()
        await asyncio.to_thread(xvfb.wait, 10)


async def measure(opts: Options, runs: int | None = None,
                  backends: tuple[str, ...] = BACKENDS) -> Result:
    runs = runs or (3 if opts.quick else 10)
    notes = [load_note("at start")]
    before = census()
    results: dict[str, Any] = {}
    for backend in backends:
        results[backend] = await measure_backend(backend, runs)
    vnc_times = [await x11vnc_once() for _ in range(runs)]
    results["x11vnc"] = {"runs": runs, "first_update_s": vnc_times,
                         "first_update_p50": pct(vnc_times, 0.5),
                         "first_update_p95": pct(vnc_times, 0.95)}
    after = census()
    notes.append(f"processes before/after: ours {before['ours']}/{after['ours']}, "
                 f"machine {before['machine']}/{after['machine']}")
    if after["ours"] > before["ours"]:
        notes.append("WARNING: processes of this benchmark were left running")
    if "docker" in results and results["docker"]["docker_leftovers"]:
        notes.append(f"WARNING: {results['docker']['docker_leftovers']} docker objects left")
    notes.append(load_note("at end"))
    return _result(results, runs, notes)


def _result(results: dict[str, Any], runs: int, notes: list[str]) -> Result:
    figures: list[Figure] = []
    local = results.get("local")
    vnc = results["x11vnc"]
    for backend, other in (("local", "docker"), ("docker", None)):
        r = results.get(backend)
        if r is None:
            continue
        o = results.get(other) if other else None
        for q in ("p50", "p95"):
            figures.append(Figure(
                f"start to first frame {q}, {backend} backend", r[f"first_frame_{q}"], "s",
                o[f"first_frame_{q}"] if o else vnc[f"first_update_{q}"],
                f"{other} backend, same run" if o else X11VNC_BASELINE))
        figures.append(Figure(
            f"create -> running p50, {backend} backend", r["running_p50"], "s",
            o["running_p50"] if o else None, f"{other} backend, same run" if o else None))
    if local is not None:
        figures.append(Figure("start to first frame p50, local backend, vs bare x11vnc",
                              local["first_frame_p50"], "s", vnc["first_update_p50"],
                              X11VNC_BASELINE))
    notes = [f"{runs} runs per backend, one session at a time, {RESOLUTION}, full desktop "
             "(fluxbox, xterm, Chromium), default session settings; served gateway per backend",
             "first frame = POST /api/visual-sessions -> first decoded frame at an aiortc WHEP "
             "viewer that offers as soon as GET ?wait=running returns",
             "baselines: the docker backend for local; for docker (and 'vs bare x11vnc'): "
             "Xvfb launch -> x11vnc (tuned) -> RFB client -> first framebuffer update, no apps",
             *notes]
    return Result(benchmark="session_start", title="Session start: to running and to the first "
                  "frame, per backend", figures=figures, series=results, notes=notes)


def run(opts: Options) -> Result:
    return asyncio.run(measure(opts))


def _secs(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None, help="per backend (quick 3, full 10)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out-dir", type=Path, default=Options().out_dir)
    args = parser.parse_args()
    t0 = time.monotonic()
    opts = Options(quick=args.quick, out_dir=args.out_dir)
    result = asyncio.run(measure(opts, args.runs, tuple(args.backends.split(","))))
    result.seconds = time.monotonic() - t0
    print_result(result)
    for key in ("local", "docker"):
        r = result.series.get(key)
        if r:
            print(f"  {key:6s} running {_secs(r['running_s'])} s, first frame "
                  f"{_secs(r['first_frame_s'])} s")
    vnc = result.series["x11vnc"]["first_update_s"]
    print(f"  x11vnc first update {_secs(vnc)} s; "
          f"median {statistics.median(vnc):.2f} s")
    print(f"\nwrote {write_result(result, args.out_dir)} ({result.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
