"""Benchmark: the swarm backend against the docker backend on the host, same run.

A swarm is built on this machine the way ``tests/swarm`` builds it (the host engine
as manager, Docker-in-Docker workers from the project's Debian base, the session
image loaded with ``docker save``/``load``), then two served gateways measure, one
session at a time (full desktop, 1600x900, network ``none`` on both):

* **create -> first frame**: ``POST /api/visual-sessions`` until an aiortc WHEP
  viewer decodes its first frame (the viewer offers as soon as ``?wait=running``
  returns): the swarm backend (a session on a worker) against the docker backend
  (two containers on the host). Target: p50 <= 1.5x docker.
* **action -> decoded frame**: a ``type`` action through the gateway until the next
  frame whose picture changed reaches the viewer, on a session on a worker against a
  session on the host. This is the path glass-to-glass takes (gateway -> link ->
  agent -> X -> capture -> encode -> WebRTC), measured at the viewer's decoder
  output. Docker samples are taken first, then swarm ones (blocks, not interleaved).
* **glass-to-glass with page content** (``benchmarks/swarm_g2g.py``): page_content's
  self-stamping page (``anim``) in the session's Chromium, the viewer page (WebRTC) in
  headless Chromium here decoding the stamps; runs alternate docker / swarm. Target:
  p50 <= 1.2x the same session on the host.

Full mode uses two workers (three nodes) and also runs the three-node test
(``VR_SWARM_WORKERS=2 pytest tests/swarm/test_swarm_cluster.py``: spread, drain, node
death, re-adoption, nothing left) and ``tests/swarm/full_stack_deploy.py`` (``docker
stack deploy`` of deploy/swarm-stack.yml, a session through the deployed gateway,
``docker stack rm``). The load module is not run across the cluster yet.

Standalone: ``python -m benchmarks.swarm [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.glass_to_glass import Receiver  # noqa: E402
from benchmarks.harness import ServedGateway, print_result, write_result  # noqa: E402
from benchmarks.suite import Figure, Options, Result  # noqa: E402
from benchmarks.swarm_g2g import g2g_runs  # noqa: E402
from gateway.backends.docker import gateway_label  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from tests.swarm.cluster import (  # noqa: E402
    Cluster,
    node_leftovers,
    start_cluster,
    stop_cluster,
    task_of,
)

RESOLUTION = "1600x900"
APPS = ("fluxbox", "xterm", "chromium")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def start_runs(gw: ServedGateway, runs: int) -> dict[str, list[float]]:
    """create -> running and create -> first decoded frame, one session at a time."""
    running: list[float] = []
    first: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        created = await gw.create(resolution=RESOLUTION, network="none")
        sid = created["session_id"]
        try:
            await gw.wait_running(sid)
            running.append(time.perf_counter() - t0)
            receiver = Receiver()
            try:
                location = await gw.whep(sid, receiver.pc)
                await asyncio.wait_for(receiver.first_frame.wait(), 60)
                first.append(time.perf_counter() - t0)
                await gw.delete_path(location)
            finally:
                await receiver.close()
        finally:
            await gw.delete(sid)
    return {"running_s": running, "first_frame_s": first}


async def action_runs(gw: ServedGateway, samples: int) -> list[float]:
    """Seconds from sending a ``type`` action to the first decoded frame that differs."""
    created = await gw.create_running(resolution=RESOLUTION, network="none")
    sid = created["session_id"]
    receiver = Receiver()
    latest: dict[str, Any] = {"y": None, "changed_at": None, "since": 0.0}
    changed = asyncio.Event()

    def analyse(at: float, y: np.ndarray) -> None:
        small = y[::8, ::8].astype(np.int16)
        prev = latest["y"]
        latest["y"] = small
        if (prev is not None and latest["changed_at"] is None and at >= latest["since"]
                and int(np.abs(small - prev).max()) > 24):
            latest["changed_at"] = at
            changed.set()

    receiver.analyse = analyse
    out: list[float] = []
    assert gw.http is not None
    try:
        await gw.whep(sid, receiver.pc)
        await asyncio.wait_for(receiver.first_frame.wait(), 60)
        await asyncio.sleep(2.0)  # past the first keyframes and Chromium's start
        url = gw.url(f"/api/visual-sessions/{sid}/actions")
        # Chromium has the focus: type into its address bar, where every letter shows.
        async with gw.http.post(url, json={"action": "key", "text": "ctrl+l"}) as r:
            await r.read()
        await asyncio.sleep(1.0)
        for i in range(samples + 3):
            latest["changed_at"] = None
            changed.clear()
            latest["since"] = time.monotonic()
            async with gw.http.post(url, json={"action": "type", "text": "abcdefgh"[i % 8]}) as r:
                await r.read()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 5)
            if latest["changed_at"] is not None and i >= 3:  # 3 warm-up samples
                out.append(latest["changed_at"] - latest["since"])
            await asyncio.sleep(0.3)
    finally:
        await receiver.close()
        await gw.delete(sid)
    return out


async def load_phase(gw: ServedGateway, cluster: Cluster, per_node: int,
                     seconds: float) -> dict[str, Any]:
    """*per_node* sessions per worker at once, each with an aiortc viewer and an agent
    typing twice a second for *seconds*: errors, the longest gap between frames at any
    viewer (a stall), where swarm put them, and what is left on each node afterwards."""
    assert gw.http is not None
    http = gw.http
    sids: list[str] = []
    receivers: list[Receiver] = []
    arrivals: list[list[float]] = []
    errors: list[str] = []
    placed: dict[str, int] = {}
    try:
        for _ in range(per_node * len(cluster.workers)):
            created = await gw.create_running(resolution="1280x720", network="none")
            sids.append(created["session_id"])
        for sid in sids:
            node = task_of(cluster.client, sid)["NodeID"]
            placed[node] = placed.get(node, 0) + 1
            receiver = Receiver()
            times: list[float] = []
            receiver.analyse = lambda at, y, times=times: times.append(at)  # type: ignore[misc]
            await gw.whep(sid, receiver.pc)
            receivers.append(receiver)
            arrivals.append(times)
        for sid in sids:
            async with http.post(gw.url(f"/api/visual-sessions/{sid}/actions"),
                                 json={"action": "key", "text": "ctrl+l"}) as r:
                await r.read()

        async def typist(sid: str) -> None:
            url = gw.url(f"/api/visual-sessions/{sid}/actions")
            deadline = time.monotonic() + seconds
            i = 0
            while time.monotonic() < deadline:
                try:
                    async with http.post(url, json={"action": "type",
                                                       "text": "abcdefgh"[i % 8]}) as r:
                        await r.read()
                        if r.status != 200:
                            errors.append(f"{sid}: action {r.status}")
                except (OSError, TimeoutError) as e:
                    errors.append(f"{sid}: {e}")
                i += 1
                await asyncio.sleep(0.5)

        start = time.monotonic()
        await asyncio.gather(*(typist(sid) for sid in sids))
        end = time.monotonic()
        stalls = []
        for sid, times in zip(sids, arrivals, strict=True):
            window = [start, *[t for t in times if start <= t <= end], end]
            stalls.append(max(b - a for a, b in zip(window, window[1:], strict=False)))
            if not any(start <= t <= end for t in times):
                errors.append(f"{sid}: no frames during the load")
    finally:
        for receiver in receivers:
            await receiver.close()
        for sid in sids:
            await gw.delete(sid)
    await asyncio.sleep(5)  # services removed, containers going
    leftovers = {w.name: await asyncio.to_thread(node_leftovers, w) for w in cluster.workers}
    return {"sessions": len(sids), "nodes": len(cluster.workers), "placed": placed,
            "errors": errors, "max_stall_s": max(stalls) if stalls else None,
            "leftovers": leftovers, "seconds": seconds}


async def measure(opts: Options) -> Result:
    workers = 1 if opts.quick else 2
    runs = 3 if opts.quick else 8
    samples = 15 if opts.quick else 40
    client = docker.from_env(timeout=120)
    run_id = secrets.token_hex(3)
    results: dict[str, Any] = {"workers": workers, "runs": runs}
    notes: list[str] = []
    swarm_gw = ServedGateway(backend="swarm", apps=APPS, name="swarm", extra_args=(
        "--swarm-reserve-cpus", "0.5", "--swarm-reserve-memory-mb", "512"))
    docker_gw = ServedGateway(backend="docker", apps=APPS, name="swarm-docker")
    made: list[Cluster] = []
    try:
        cluster = await asyncio.to_thread(start_cluster, client, workers,
                                          GatewayConfig().docker_image, run_id, made)
        results["cluster_s"] = cluster.timings["cluster_s"]
        results["image_load_s"] = cluster.timings["image_load_s"]
        for gw in (docker_gw, swarm_gw):
            await gw.start()
        results["docker"] = await start_runs(docker_gw, runs)
        results["swarm"] = await start_runs(swarm_gw, runs)
        results["docker_action"] = await action_runs(docker_gw, samples)
        results["swarm_action"] = await action_runs(swarm_gw, samples)
        results["g2g"] = await g2g_runs(swarm_gw, docker_gw, 2 if opts.quick else 4,
                                        4.0 if opts.quick else 6.0)
        results["load"] = await load_phase(swarm_gw, cluster, 2 if opts.quick else 3,
                                           10 if opts.quick else 30)
    finally:
        for gw in (swarm_gw, docker_gw):
            await gw.aclose()
        if made:
            left = await asyncio.to_thread(stop_cluster, made[0],
                                           [gateway_label(swarm_gw.state_dir)])
            results["left_behind"] = left
        client.close()
    if not opts.quick:
        env = {**os.environ, "VR_SWARM_WORKERS": "2"}
        done = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s",
            "tests/swarm/test_swarm_cluster.py", "tests/swarm/full_stack_deploy.py"],
            cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=1800)
        tail = [line for line in done.stdout.splitlines() if line.startswith("swarm:")
                or "passed" in line or "failed" in line]
        results["three_node_test"] = {"returncode": done.returncode, "lines": tail}
        notes.append(f"three-node test and docker stack deploy (host + 2 workers): exit "
                     f"{done.returncode}; "
                     + " | ".join(tail))
    return _result(results, notes)


def _result(results: dict[str, Any], notes: list[str]) -> Result:
    figures: list[Figure] = []
    d, s = results["docker"], results["swarm"]
    for q in (0.5, 0.95):
        name = f"p{int(q * 100)}"
        figures.append(Figure(
            f"create -> first frame {name}, swarm (session on a worker)",
            pct(s["first_frame_s"], q), "s", pct(d["first_frame_s"], q),
            "docker backend on the host, same run",
            target="<= 1.5x" if q == 0.5 else None))
    figures.append(Figure("create -> running p50, swarm", pct(s["running_s"], 0.5), "s",
                          pct(d["running_s"], 0.5), "docker backend on the host, same run"))
    for q in (0.5, 0.95):
        figures.append(Figure(
            f"action -> decoded frame p{int(q * 100)}, session on a worker",
            _ms(pct(results["swarm_action"], q)), "ms", _ms(pct(results["docker_action"], q)),
            "the same on the host (docker backend), same run",
            target="<= 1.2x (glass-to-glass target)" if q == 0.5 else None,
            note=f"n={len(results['swarm_action'])}/{len(results['docker_action'])}"))
    g2g = results.get("g2g")
    if g2g is not None:
        sw, dk = g2g["swarm"], g2g["docker"]
        for qn in ("p50", "p95"):
            figures.append(Figure(
                f"glass-to-glass {qn}, page content (anim) to a WebRTC viewer, session on a "
                "worker", sw[f"{qn}_ms"], "ms", dk[f"{qn}_ms"],
                "the same session on the host (docker backend), same run",
                target="<= 1.2x" if qn == "p50" else None,
                note=(f"runs' p50 swarm {[round(v or 0) for v in sw['run_p50_ms']]} / docker "
                      f"{[round(v or 0) for v in dk['run_p50_ms']]}; n={sw['samples']}/"
                      f"{dk['samples']}") if qn == "p50" else None))
    load = results.get("load")
    if load is not None:
        leaks = sum(len(v) for v in load["leftovers"].values())
        figures.append(Figure(
            f"load across the cluster: {load['sessions'] // load['nodes']} sessions x "
            f"{load['nodes']} node(s), longest viewer stall", load["max_stall_s"], "s",
            target="<= 5 s, 0 errors, 0 leaks",
            note=f"{len(load['errors'])} errors, {leaks} leftovers on the nodes, "
                 f"placed {sorted(load['placed'].values())}"))
    notes = [f"{results['workers']} worker(s) + the host as manager; {results['runs']} "
             f"sessions per backend, one at a time, {RESOLUTION}, full desktop, network none",
             f"cluster built in {results['cluster_s']:.1f} s (session image loaded into the "
             f"workers in {results['image_load_s']:.1f} s)",
             "action -> decoded frame: a one-letter `type` action via the gateway until the "
             "aiortc viewer decodes a frame whose picture changed (1/8-subsampled luma)",
             "load: every session at once, an aiortc viewer each and a letter typed every "
             "0.5 s; stall = the longest gap between decoded frames at any viewer",
             f"left behind after the run: {results.get('left_behind')}", *notes]
    return Result(benchmark="swarm", title="Swarm backend vs the docker backend on the host",
                  figures=figures, series=results, notes=notes)


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def run(opts: Options) -> Result:
    return asyncio.run(measure(opts))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    opts = Options(quick=args.quick)
    t0 = time.monotonic()
    result = run(opts)
    result.seconds = time.monotonic() - t0
    print_result(result)
    path = write_result(result, opts.out_dir)
    print(f"wrote {path}")
    if result.series.get("swarm_action"):
        print("action samples (ms): swarm", [round(v * 1000) for v in result.series["swarm_action"]])
        print("                     docker", [round(v * 1000) for v in result.series["docker_action"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
