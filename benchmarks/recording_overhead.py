"""Benchmark: the runtime agent's CPU with and without the recorder.

Starts its own Xvfb 1600x900 and drives full-screen motion at 30 fps from a
child process (the drawing code of ``agent_pipeline.py``). Each run has a
:class:`~agent_side.media.VideoSource` with one consuming subscriber (a
stand-in for a viewer); ``with`` adds the :class:`~agent_side.recorder.Recorder`
writing fragmented MP4 to a temporary folder, as the agent does when
recording (keyframe interval 2 s instead of 3 s). Runs alternate to spread
machine noise. Target: the recorder costs <= 5 % of one core.

Prints a table and writes ``benchmarks/results/recording_overhead.json``.

Usage: ``python benchmarks/recording_overhead.py [--seconds 6] [--reps 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from agent_pipeline import Driver, H, W, cpu_seconds, start_xvfb  # noqa: E402

from agent_side.media import MediaConfig, VideoSource  # noqa: E402
from agent_side.recorder import Recorder, RecorderConfig  # noqa: E402

TARGET_PCT = 5.0


async def run_once(display: str, seconds: float, record: bool) -> dict[str, Any]:
    keyframe_s = 2.0 if record else 3.0
    src = VideoSource(MediaConfig(display=display, width=W, height=H, fps=30,
                                  keyframe_interval_s=keyframe_s))
    await src.start()
    driver = Driver(display, "motion", seconds)
    viewer = src.subscribe("h264", name="viewer")
    stop = asyncio.Event()
    received = 0

    async def consume() -> None:
        nonlocal received
        while not stop.is_set():
            try:
                await asyncio.wait_for(viewer.get(), 0.1)
            except TimeoutError:
                continue
            received += 1

    consumer = asyncio.create_task(consume())
    with tempfile.TemporaryDirectory(prefix="vr-rec-bench-") as tmp:
        recorder = (Recorder(src, RecorderConfig(folder=Path(tmp), width=W, height=H,
                                                 keyframe_interval_s=keyframe_s))
                    if record else None)
        try:
            if recorder is not None:
                await recorder.start()
            await asyncio.sleep(0.5)  # first keyframe settles
            frames0 = src.stats["frames_encoded"]["total"]  # type: ignore[index]
            written0 = recorder.bytes if recorder else 0
            cpu0, t0 = cpu_seconds(), time.monotonic()
            driver.go()
            await asyncio.to_thread(driver.wait)
            wall = time.monotonic() - t0
            cpu = cpu_seconds() - cpu0
            frames = src.stats["frames_encoded"]["total"] - frames0  # type: ignore[index,operator]
            written = (recorder.bytes - written0) if recorder else 0
        finally:
            stop.set()
            await consumer
            if recorder is not None:
                await recorder.aclose()
            viewer.close()
            await src.aclose()
        file_bytes = (Path(tmp) / "recording.mp4").stat().st_size if record else 0
    return {"cpu_pct": 100 * cpu / wall, "fps": frames / wall,
            "recorded_bytes_per_s": written / wall, "file_bytes": file_bytes}


async def main(seconds: float, reps: int) -> None:
    xvfb, display = start_xvfb()
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    try:
        for _ in range(reps):
            for mode in ("without", "with"):
                runs[mode].append(await run_once(display, seconds, mode == "with"))
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=5)
    summary = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for mode, rs in runs.items()}
    overhead = summary["with"]["cpu_pct"] - summary["without"]["cpu_pct"]
    ratio = summary["with"]["cpu_pct"] / summary["without"]["cpu_pct"]
    results = {"width": W, "height": H, "seconds": seconds, "reps": reps,
               "cpu_count": os.cpu_count(), "workload": "motion 30 fps", "runs": runs,
               "median": summary, "overhead_pct_of_core": overhead, "ratio_with_without": ratio,
               "target_pct_of_core": TARGET_PCT, "within_target": overhead <= TARGET_PCT}
    print(f"{'recorder':9} {'cpu % core':>11} {'fps':>6} {'rec Mbit/s':>11}")
    for mode in ("without", "with"):
        s = summary[mode]
        print(f"{mode:9} {s['cpu_pct']:11.1f} {s['fps']:6.1f} "
              f"{s['recorded_bytes_per_s'] * 8 / 1e6:11.2f}")
    print(f"overhead {overhead:+.1f} % of one core (target <= {TARGET_PCT:.0f} %), "
          f"ratio with/without {ratio:.3f}; medians of {reps} alternating runs of {seconds:.0f} s")
    out = ROOT / "benchmarks" / "results" / "recording_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.reps))
