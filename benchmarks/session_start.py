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
import json
import os
import re
import statistics
import subprocess
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
    load_note,
    print_result,
    write_result,
)
from benchmarks.receiver import Receiver  # noqa: E402
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


async def _pool_ready(gw: ServedGateway) -> int:
    """Warm pods ready to claim, from the gateway's /metrics."""
    assert gw.http is not None
    async with gw.http.get(gw.url("/metrics")) as resp:
        text = await resp.text()
    return sum(int(float(m.group(1))) for m in re.finditer(
        r'^visual_runtime_pool_pods\{key="[^"]*",state="ready"\} (\S+)$', text, re.M))


async def _wait_pool(gw: ServedGateway, n: int, timeout: float = 300.0) -> float:
    """Seconds until *n* warm pods are ready."""
    t0 = time.perf_counter()
    while await _pool_ready(gw) < n:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"the warm pool did not reach {n} ready pods in {timeout:.0f} s")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0


POOL_ARGS = ("--pool-max-load", "1000")
"""The benchmark machine is shared: refills must not wait for it to calm down."""


async def measure_backend(backend: str, runs: int, pool: int = 0) -> dict[str, Any]:
    extra = ("--pool-size", str(pool), *POOL_ARGS) if pool else ()
    gw = ServedGateway(backend=backend, apps=("fluxbox", "xterm", "chromium"),
                       name=f"start-{backend}{'-pool' if pool else ''}", extra_args=extra)
    running: list[float] = []
    first: list[float] = []
    leftovers = 0
    try:
        await gw.start()
        for _ in range(runs):
            if pool:
                await _wait_pool(gw, 1)
            t0 = time.perf_counter()
            created = await gw.create(resolution=RESOLUTION)
            if pool and not created.get("from_pool"):
                raise RuntimeError("a create with a warm pod ready was not served from the pool")
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
    return {"backend": backend, "runs": runs, "pool": pool, "running_s": running, "first_frame_s": first,
            "running_p50": pct(running, 0.5), "running_p95": pct(running, 0.95),
            "first_frame_p50": pct(first, 0.5), "first_frame_p95": pct(first, 0.95),
            "docker_leftovers": leftovers}


async def measure_burst(creates: int, pool: int) -> dict[str, Any]:
    """*creates* creates at once against a pool of *pool* (local, Xvfb + xterm): each
    session is deleted once running. Errors, create -> running times, and how long the
    pool takes to be full again after the burst."""
    gw = ServedGateway(backend="local", apps=("xterm",), name="start-burst",
                       extra_args=("--pool-size", str(pool), "--max-sessions",
                                   str(creates + pool), "--create-burst", str(creates),
                                   "--create-rate", str(60 * creates), *POOL_ARGS))
    times: list[float] = []
    errors: list[str] = []
    from_pool = 0
    try:
        await gw.start()
        await _wait_pool(gw, pool)

        async def one() -> None:
            nonlocal from_pool
            t0 = time.perf_counter()
            sid = None
            try:
                created = await gw.create(resolution="1280x720")
                sid = created["session_id"]
                from_pool += bool(created.get("from_pool"))
                await gw.wait_running(sid)
                times.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - counted and reported
                why = str(e)[:200]
                if sid is not None:
                    assert gw.http is not None
                    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}")) as resp:
                        why = f"{(await resp.json()).get('error')}"[:300]
                errors.append(why)
            if sid is not None:
                await gw.delete(sid)

        await asyncio.gather(*(one() for _ in range(creates)))
        recovery = await _wait_pool(gw, pool, timeout=600)
    finally:
        await gw.aclose()
    return {"creates": creates, "pool": pool, "errors": errors, "running_s": times,
            "from_pool": from_pool, "running_p50": pct(times, 0.5),
            "running_p95": pct(times, 0.95), "recovery_s": recovery}


def _cgroup_usage(sid: str) -> tuple[float, int]:
    """CPU seconds (of the processes alive now) and memory bytes of pod *sid*'s cgroups
    (local backend; cgroup v1 has no CPU total of its own here, so /proc is summed)."""
    from gateway.backends.cgroup import Cgroup

    cpu, mem = 0.0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for role in ("app", "agent"):
        group = Cgroup(f"{sid}.{role}")
        mem += group.memory_current() or 0
        for pid in group.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / tick
    return cpu, mem


async def measure_idle(pool: int, window_s: float, settle_s: float = 10.0) -> dict[str, Any]:
    """CPU and memory of idle warm pods (full desktop) over *window_s*, *settle_s* after
    the pool is full (Chromium keeps initialising for seconds after its first page),
    against the same pods' figures once claimed (an idle session without viewers)."""
    gw = ServedGateway(backend="local", apps=("fluxbox", "xterm", "chromium"),
                       name="start-idle", extra_args=("--pool-size", str(pool), *POOL_ARGS))
    try:
        await gw.start()
        await _wait_pool(gw, pool)
        await asyncio.sleep(settle_s)
        pods = json.loads((gw.state_dir / "pool.json").read_text())
        sids = [sid for sid, p in pods.items() if p.get("ready")][:pool]
        before = [_cgroup_usage(sid) for sid in sids]
        await asyncio.sleep(window_s)
        after = [_cgroup_usage(sid) for sid in sids]
        pooled_cpu = [(a[0] - b[0]) / window_s * 100 for a, b in zip(after, before, strict=True)]
        pooled_mem = [a[1] / 2**20 for a in after]
        created = await gw.create(resolution=RESOLUTION)
        sid = created["session_id"]
        await gw.wait_running(sid)
        await asyncio.sleep(settle_s)
        b0 = _cgroup_usage(sid)
        await asyncio.sleep(window_s)
        b1 = _cgroup_usage(sid)
        await gw.delete(sid)
    finally:
        await gw.aclose()
    return {"pods": len(sids), "window_s": window_s, "settle_s": settle_s, "pooled_cpu_pct": pooled_cpu,
            "pooled_mem_mib": pooled_mem,
            "session_cpu_pct": (b1[0] - b0[0]) / window_s * 100, "session_mem_mib": b1[1] / 2**20}


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
                  backends: tuple[str, ...] = BACKENDS, pool_runs: int | None = None,
                  burst: tuple[int, int] | None = None,
                  idle_window_s: float | None = None) -> Result:
    runs = runs or (3 if opts.quick else 10)
    pool_runs = runs if pool_runs is None else pool_runs
    if burst is None:
        burst = (8, 4) if opts.quick else (50, 8)
    if idle_window_s is None:
        idle_window_s = 5.0 if opts.quick else 20.0
    notes = [load_note("at start")]
    before = census()
    results: dict[str, Any] = {}
    for backend in backends:
        results[backend] = await measure_backend(backend, runs)
        if pool_runs:
            results[f"{backend}_pool"] = await measure_backend(backend, pool_runs, pool=1)
    if burst and burst[0]:
        results["burst"] = await measure_burst(*burst)
    if idle_window_s:
        results["idle"] = await measure_idle(2, idle_window_s, 10.0 if opts.quick else 30.0)
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
    for backend in ("local", "docker"):
        warm, cold = results.get(f"{backend}_pool"), results.get(backend)
        if warm is None:
            continue
        for q, target in (("p50", "<= 300 ms"), ("p95", "<= 500 ms")):
            figures.append(Figure(
                f"warm pool: create -> running -> first frame {q}, {backend} backend",
                warm[f"first_frame_{q}"], "s", cold[f"first_frame_{q}"] if cold else None,
                f"cold start, {backend} backend, same run" if cold else None, target=target))
    burst = results.get("burst")
    if burst is not None:
        figures.append(Figure(
            f"burst of {burst['creates']} creates, pool of {burst['pool']} "
            f"({len(burst['errors'])} errors, {burst['from_pool']} from the pool, "
            f"{len(burst['running_s'])} running): create -> running p95",
            burst["running_p95"], "s", None, None))
        figures.append(Figure(f"burst: pool of {burst['pool']} full again after",
                              burst["recovery_s"], "s"))
    idle = results.get("idle")
    if idle is not None and idle["pooled_cpu_pct"]:
        figures.append(Figure(
            "idle warm pod CPU (mean of pods)", statistics.mean(idle["pooled_cpu_pct"]),
            "% of a core", idle["session_cpu_pct"], "the same pod claimed, idle, no viewer",
            target="<= 1 %"))
        figures.append(Figure(
            "idle warm pod memory (mean of pods)", statistics.mean(idle["pooled_mem_mib"]),
            "MiB", idle["session_mem_mib"], "the same pod claimed, idle, no viewer"))
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
    parser.add_argument("--pool-runs", type=int, default=None,
                        help="warm-pool runs per backend (default: --runs; 0 skips)")
    parser.add_argument("--burst", default=None,
                        help="CREATES,POOL for the burst (quick 8,4; full 50,8; 0,0 skips)")
    parser.add_argument("--idle-window", type=float, default=None,
                        help="seconds idle warm pods are measured (quick 5, full 20; 0 skips)")
    parser.add_argument("--out-dir", type=Path, default=Options().out_dir)
    args = parser.parse_args()
    t0 = time.monotonic()
    opts = Options(quick=args.quick, out_dir=args.out_dir)
    burst = tuple(int(v) for v in args.burst.split(",")) if args.burst else None
    result = asyncio.run(measure(
        opts, args.runs, tuple(args.backends.split(",")), args.pool_runs,
        (burst[0], burst[1]) if burst and burst[0] else (0, 0) if burst else None,
        args.idle_window))
    result.seconds = time.monotonic() - t0
    print_result(result)
    for key in ("local", "docker", "local_pool", "docker_pool"):
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
