"""Benchmark: the runtime agent's CPU with and without the recorder, same workload, same run.

Starts its own Xvfb 1600x900 and drives full-screen motion at 30 fps from a
child process (the drawing code of ``agent_pipeline.py``). Each run has a
:class:`~agent_side.media.VideoSource` with one consuming subscriber (a
stand-in for a viewer) in this process, i.e. the runtime agent's media
pipeline without its HTTP side; ``with`` adds the
:class:`~agent_side.recorder.Recorder` writing fragmented MP4 to a temporary
folder, as the agent does when recording (keyframe interval 2 s instead of
3 s). Runs alternate (without, with, without, ...) to spread machine noise.
The baseline is *without*. CPU = this process's ``getrusage`` over the
workload. Target: the recorder costs <= 5 % of one core.

Standalone: ``python -m benchmarks.recording_overhead [--quick] [--seconds 8]
[--reps 3]`` prints a table and writes ``benchmarks/results/recording_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent_side.media import MediaConfig, VideoSource  # noqa: E402
from agent_side.recorder import Recorder, RecorderConfig  # noqa: E402
from benchmarks.agent_pipeline import Driver, H, W, cpu_seconds, start_xvfb  # noqa: E402
from benchmarks.harness import census, load_note, print_result, write_result  # noqa: E402
from benchmarks.suite import Figure, Options, Result  # noqa: E402

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


async def measure(seconds: float, reps: int) -> Result:
    notes = [load_note("at start")]
    before = census()
    xvfb, display = start_xvfb()
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    try:
        for _ in range(reps):
            for mode in ("without", "with"):
                runs[mode].append(await run_once(display, seconds, mode == "with"))
    finally:
        xvfb.terminate()
        await asyncio.to_thread(xvfb.wait, 5)
    after = census()
    notes.append(f"processes before/after: ours {before['ours']}/{after['ours']}, "
                 f"machine {before['machine']}/{after['machine']}")
    if after["ours"] > before["ours"]:
        notes.append("WARNING: processes of this benchmark were left running")
    notes.append(load_note("at end"))
    summary = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for mode, rs in runs.items()}
    with_, without = summary["with"], summary["without"]
    overhead = with_["cpu_pct"] - without["cpu_pct"]
    figures = [
        Figure("runtime agent CPU with the recorder, motion 30 fps", with_["cpu_pct"],
               "% of a core", without["cpu_pct"], "same pipeline without the recorder",
               target=f"<= baseline + {TARGET_PCT:.0f} points"),
        Figure("recorder CPU overhead, motion 30 fps", overhead, "% of a core",
               target=f"<= {TARGET_PCT:.0f}"),
        Figure("runtime agent CPU per encoded frame with the recorder, motion",
               10 * with_["cpu_pct"] / with_["fps"] if with_["fps"] else None, "ms",
               10 * without["cpu_pct"] / without["fps"] if without["fps"] else None,
               "without the recorder (robust when a loaded machine drops frames)"),
        Figure("frames encoded per second with the recorder", with_["fps"], "fps",
               without["fps"], "without the recorder", lower_is_better=False),
        Figure("recording written", with_["recorded_bytes_per_s"] * 8 / 1e6, "Mbit/s"),
    ]
    notes = [f"{W}x{H} Xvfb of its own, full-screen motion at 30 fps; medians of {reps} "
             f"alternating runs of {seconds:.0f} s each; one consuming subscriber in both",
             f"overhead {overhead:+.1f} % of one core (target <= {TARGET_PCT:.0f}), "
             f"within target: {overhead <= TARGET_PCT}", *notes]
    return Result(benchmark="recording_overhead", title="Recording overhead: runtime agent CPU "
                  "with vs without the recorder (same workload, same run)", figures=figures,
                  series={"runs": runs, "median": summary, "width": W, "height": H,
                          "seconds": seconds, "reps": reps, "workload": "motion 30 fps",
                          "cpu_count": os.cpu_count()}, notes=notes)


def run(opts: Options) -> Result:
    seconds, reps = (3.0, 1) if opts.quick else (8.0, 3)
    return asyncio.run(measure(seconds, reps))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="per run (quick 3, full 8)")
    parser.add_argument("--reps", type=int, default=None, help="runs of each (quick 1, full 3)")
    parser.add_argument("--out-dir", type=Path, default=Options().out_dir)
    args = parser.parse_args()
    t0 = time.monotonic()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    reps = args.reps or (1 if args.quick else 3)
    result = asyncio.run(measure(seconds, reps))
    result.seconds = time.monotonic() - t0
    print_result(result)
    print(f"\nwrote {write_result(result, args.out_dir)} ({result.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
