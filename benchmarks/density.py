"""Benchmark: how many idle Chromium sessions fit before one active session's p95 latency doubles.

One served gateway (``local`` backend, full desktop: fluxbox, xterm, Chromium
on ``about:blank``). One **active** 1600x900 session is watched by an aiortc
WHEP viewer while the scrolling workload of ``glass_to_glass.py`` runs on its
display (:class:`Driver` at 30 steps/s, marker-matched frames at the
:class:`Receiver`, measured by its ``run_scenario``: warm-up steps dropped,
glass-to-glass = X request sent -> decoded frame out, on this process's
monotonic clock). Its p95 with **0** idle sessions is the baseline. Then idle
sessions (same apps, recording off, nobody watching) are added in steps;
after each step the new pods are left to settle (Chromium running, their CPU
back down) and the p95 is measured again.

The figure is the largest idle-session count at which the active session's
p95 stayed below 2x the baseline (full mode: a step over 2x is measured once
more and the better p95 kept, so one noisy window does not end the search;
the 0-idle baseline is measured again at the end to show machine drift).
Steps stop at the first doubling, at the memory cap (MemAvailable minus
2 GiB, over the measured PSS of one idle session) or at the step list's end
(quick mode: 0 and 2 idle only, to check that it works). Memory and CPU per idle session are reported too.

Standalone: ``python -m benchmarks.density [--quick] [--steps 2,4,8]`` prints a
table and writes ``benchmarks/results/density.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.glass_to_glass import run_scenario  # noqa: E402
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
    write_result,
)
from benchmarks.marker_driver import Driver  # noqa: E402
from benchmarks.receiver import Receiver  # noqa: E402
from benchmarks.suite import Figure, Options, Result  # noqa: E402

WIDTH, HEIGHT = 1600, 900
APPS = ("fluxbox", "xterm", "chromium")
FULL_STEPS = (2, 4, 8, 12, 16, 24, 32, 48)
QUICK_STEPS = (2,)
RESERVE_MIB = 2048


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _settle(gw: ServedGateway, sids: list[str], timeout: float) -> float:
    """Until every pod runs Chromium and the idle pods use < 5 + 3*n % of a core."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pods = pod_pids(sids)
        if all(any(proc_name(p).startswith("chrom") for p in pods[s]["app"]) for s in sids):
            break
        await asyncio.sleep(0.2)
    while time.monotonic() - t0 < timeout:
        pids = [p for s in pod_pids(sids).values() for p in s["app"] + s["agent"]]
        before = cpu_map(pids)
        t1 = time.monotonic()
        await asyncio.sleep(1.0)
        if cpu_pct(before, cpu_map(pids), time.monotonic() - t1) < 5 + 3 * len(sids):
            break
    return time.monotonic() - t0


async def _measure_step(gw: ServedGateway, active: str, idle: list[str], driver: Driver,
                        receiver: Receiver, samples: int) -> dict[str, Any]:
    pods = pod_pids([active, *idle])
    agent = pods[active]["agent"]
    idle_pids = [p for s in idle for p in pods[s]["app"] + pods[s]["agent"]]
    groups = {"active_agent": agent, "active_app": pods[active]["app"], "idle": idle_pids,
              "gateway": [gw.pid]}
    before = {k: cpu_map(v) for k, v in groups.items()}
    t0 = time.monotonic()
    scenario = await run_scenario("scrolling", driver, receiver, samples, None, None)
    elapsed = time.monotonic() - t0
    cpu = {k: cpu_pct(before[k], cpu_map(v), elapsed) for k, v in groups.items()}
    per_idle = [memory_mib(pods[s]["app"] + pods[s]["agent"]) for s in idle]
    return {
        "idle_sessions": len(idle),
        "p50_ms": scenario["latency_p50_ms"], "p95_ms": scenario["latency_p95_ms"],
        "samples": scenario["matched"], "fps_received": scenario["fps_received"],
        "latencies_ms": scenario["latencies_ms"],
        "cpu": cpu,
        "idle_cpu_per_session": cpu["idle"] / len(idle) if idle else None,
        "idle_pss_mib_per_session": (sum(m["pss_mib"] for m in per_idle) / len(per_idle)
                                     if per_idle else None),
        "idle_rss_mib_per_session": (sum(m["rss_mib"] for m in per_idle) / len(per_idle)
                                     if per_idle else None),
        "mem_available_mib": mem_available_mib(),
        "load_average": os.getloadavg(),
    }


async def measure(opts: Options, steps: tuple[int, ...] | None = None) -> Result:
    steps = steps or (QUICK_STEPS if opts.quick else FULL_STEPS)
    samples = 30 if opts.quick else max(opts.samples, 120)
    notes = [load_note("at start")]
    before = census()
    gw = ServedGateway(apps=APPS, max_sessions=max(steps) + 2, name="density",
                       extra_args=("--create-rate", "600", "--create-burst", "100"))
    links: list[Path] = []
    receiver: Receiver | None = None
    driver: Driver | None = None
    rows: list[dict[str, Any]] = []
    idle: list[str] = []
    recheck: dict[str, Any] | None = None
    stop_reason = "step list done"
    try:
        await gw.start()
        active = (await gw.create_running(resolution=f"{WIDTH}x{HEIGHT}",
                                          enable_recording=False,
                                          idle_timeout_minutes=0))["session_id"]
        await _settle(gw, [active], 8 if opts.quick else 60)
        display, links = link_display(gw.x_socket(active))
        driver = await asyncio.to_thread(Driver, display)
        await asyncio.to_thread(driver.open_window)
        receiver = Receiver()
        await gw.whep(active, receiver.pc)
        await asyncio.wait_for(receiver.first_frame.wait(), 20)
        rows.append(await _measure_step(gw, active, idle, driver, receiver, samples))
        baseline = rows[0]["p95_ms"]
        print(f"  0 idle: p95 {baseline:.1f} ms", file=sys.stderr)
        for target in steps:
            if target <= len(idle):
                continue
            per = rows[-1]["idle_pss_mib_per_session"] or 400.0
            room = int((mem_available_mib() - RESERVE_MIB) / per)
            if target - len(idle) > room:
                stop_reason = (f"memory cap: {target} idle sessions would need "
                               f"{(target - len(idle)) * per:.0f} MiB more")
                break
            try:
                created = [(await gw.create(resolution=f"{WIDTH}x{HEIGHT}",
                                            enable_recording=False,
                                            idle_timeout_minutes=0))["session_id"]
                           for _ in range(target - len(idle))]
                idle += created
                await asyncio.gather(*(gw.wait_running(s) for s in created))
            except RuntimeError as e:
                stop_reason = f"idle sessions for step {target} did not all start: {e}"[:300]
                break
            waited = await _settle(gw, idle, 10 if opts.quick else 120)
            row = await _measure_step(gw, active, idle, driver, receiver, samples)
            if row["p95_ms"] >= 2 * baseline and not opts.quick:
                # one noisy window must not end the search: the step is measured again
                # and its better p95 kept (both are in the series)
                again = await _measure_step(gw, active, idle, driver, receiver, samples)
                row["first_try_p95_ms"] = row["p95_ms"]
                if again["p95_ms"] < row["p95_ms"]:
                    again["first_try_p95_ms"] = row["p95_ms"]
                    row = again
            row["settle_s"] = waited
            rows.append(row)
            print(f"  {len(idle)} idle: p95 {row['p95_ms']:.1f} ms "
                  f"({row['p95_ms'] / baseline:.2f}x), load {row['load_average'][0]:.1f}",
                  file=sys.stderr)
            if row["p95_ms"] >= 2 * baseline:
                stop_reason = f"p95 doubled at {len(idle)} idle sessions"
                break
        if not opts.quick and idle:
            # the baseline again with the idle sessions gone: machine drift shows here
            await asyncio.gather(*(gw.delete(s) for s in idle))
            await _settle(gw, [active], 60)
            recheck = await _measure_step(gw, active, [], driver, receiver, samples)
    finally:
        if receiver is not None:
            await receiver.close()
        if driver is not None:
            with contextlib.suppress(Exception):  # the display may already be gone
                await asyncio.to_thread(driver.close)
        for path in links:
            with contextlib.suppress(OSError):
                path.unlink()
        await gw.aclose()
    after = census(gw.session_ids)
    notes.append(f"processes before/after: ours {before['ours']}/{after['ours']}, "
                 f"machine {before['machine']}/{after['machine']}")
    if after["ours"] > before["ours"]:
        notes.append("WARNING: processes of this benchmark were left running")
    notes.append(load_note("at end"))
    if recheck is not None:
        drift = recheck["p95_ms"] / rows[0]["p95_ms"]
        notes.append(f"0-idle p95 measured again at the end: {recheck['p95_ms']:.1f} ms "
                     f"({drift:.2f}x the first)" + (" - the machine drifted: treat the "
                                                    "density figure with care"
                                                    if not 0.7 <= drift <= 1.3 else ""))
    return _result(rows, stop_reason, opts.quick, samples, notes, recheck)


def _result(rows: list[dict[str, Any]], stop_reason: str, quick: bool, samples: int,
            notes: list[str], recheck: dict[str, Any] | None = None) -> Result:
    baseline = rows[0]["p95_ms"]
    fits = max((r["idle_sessions"] for r in rows if r["p95_ms"] < 2 * baseline), default=0)
    doubled = any(r["p95_ms"] >= 2 * baseline for r in rows)
    figures = [Figure("density: idle Chromium sessions before the active p95 doubles"
                      + ("" if doubled else " (not reached: at least)"), float(fits), "sessions",
                      lower_is_better=False)]
    for r in rows[1:]:
        figures.append(Figure(f"active session glass-to-glass p95, scroll, {r['idle_sessions']} "
                              "idle sessions", r["p95_ms"], "ms", baseline,
                              "0 idle sessions, same run", target="< 2x baseline"))
    last = rows[-1] if len(rows) > 1 else None
    if last is not None:
        figures += [
            Figure("memory per idle Chromium session (PSS, pod + runtime agent)",
                   last["idle_pss_mib_per_session"], "MiB"),
            Figure("CPU per idle Chromium session", last["idle_cpu_per_session"], "% of a core"),
        ]
    series = {
        "p95_vs_idle_sessions": [[r["idle_sessions"], r["p95_ms"]] for r in rows],
        "p50_vs_idle_sessions": [[r["idle_sessions"], r["p50_ms"]] for r in rows],
        "steps": rows, "stop_reason": stop_reason, "baseline_recheck": recheck,
    }
    notes = [f"active session {WIDTH}x{HEIGHT}, scrolling at 30 steps/s (glass_to_glass Driver), "
             f"aiortc marker-bit viewer through the gateway; >= {samples} samples per step after "
             "warm-up; idle sessions: fluxbox + xterm + Chromium on about:blank, recording off, "
             "no viewer",
             f"stopped: {stop_reason}" + (" (quick mode: checks that it works)" if quick else ""),
             *notes]
    return Result(benchmark="density", title="Density: idle Chromium sessions on this machine "
                  "before one active session's p95 glass-to-glass latency doubles",
                  figures=figures, series=series, notes=notes)


def run(opts: Options) -> Result:
    return asyncio.run(measure(opts))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", default=None, help="idle-session counts, e.g. 2,4,8")
    parser.add_argument("--out-dir", type=Path, default=Options().out_dir)
    args = parser.parse_args()
    t0 = time.monotonic()
    steps = tuple(int(n) for n in args.steps.split(",")) if args.steps else None
    result = asyncio.run(measure(Options(quick=args.quick, out_dir=args.out_dir), steps))
    result.seconds = time.monotonic() - t0
    print_result(result)
    print(f"\nwrote {write_result(result, args.out_dir)} ({result.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
