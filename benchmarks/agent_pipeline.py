"""Benchmark: capture -> convert -> encode of the runtime agent vs a naive path.

Starts its own Xvfb 1600x900, drives four workloads from a child process
(static, typing, scrolling text, full-screen motion), and for each runs

* ``ours``: :class:`agent_side.media.VideoSource` (damage driven, XShm into a
  reused frame, rectangle conversion, x264 ultrafast CRF + VBV cap) with one
  subscriber at 30 fps;
* ``naive``: a fixed 30 fps tick, a fresh ndarray per grab (mss public API),
  single-thread swscale via ``VideoFrame.from_ndarray(...).reformat`` and
  aiortc's own H.264 settings (no preset = x264 medium, 1 Mbit/s start).

Prints a table and writes ``benchmarks/results/agent_pipeline.json``.

Usage: ``python benchmarks/agent_pipeline.py [--seconds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import mss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_side.media import MediaConfig, VideoSource  # noqa: E402

W, H = 1600, 900
WORKLOADS = ("static", "typing", "scroll", "motion")


# -- child process: draws a workload -------------------------------------------

def draw(display_name: str, workload: str, seconds: float) -> None:
    from Xlib import display as xdisplay

    disp = xdisplay.Display(display_name)
    root = disp.screen().root
    font = disp.open_font("fixed")
    white = root.create_gc(foreground=0xFFFFFF, background=0x000000)
    black = root.create_gc(foreground=0x101010, background=0xFFFFFF, font=font)
    colors = [root.create_gc(foreground=c) for c in (0xC03030, 0x3060C0, 0x30A050, 0xE0A020)]
    root.fill_rectangle(white, 0, 0, W, H)
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod".split()
    line_h = 14

    def text_line(i: int) -> str:
        return f"{i:6d}  " + " ".join(words[(i + k) % len(words)] for k in range(24))

    for i in range(H // line_h):
        root.image_text(black, 8, (i + 1) * line_h - 3, text_line(i))
    for k, gc in enumerate(colors):
        root.fill_rectangle(gc, 1200 + k * 80, 50, 60, 60)
    disp.sync()
    print("ready", flush=True)
    sys.stdin.readline()  # parent says go

    start = time.monotonic()
    step = 0
    period = 1 / 30
    while time.monotonic() - start < seconds:
        step += 1
        if workload == "typing":
            col, row = step % 150, (step // 150) % 10
            root.image_text(black, 8 + col * 6, 600 + row * line_h, chr(97 + step % 26))
            next_at = start + step / 15  # 15 characters per second
        elif workload == "scroll":
            root.copy_area(white, root, 0, line_h, W, H - line_h, 0, 0)
            root.fill_rectangle(white, 0, H - line_h, W, line_h)
            root.image_text(black, 8, H - 3, text_line(1000 + step))
            next_at = start + step * period
        elif workload == "motion":
            dx = 16
            root.copy_area(white, root, 0, 0, W - dx, H, dx, 0)
            root.fill_rectangle(colors[step % 4], 0, 0, dx, H)
            root.image_text(black, 0, (step * 37) % H, text_line(step)[:3])
            next_at = start + step * period
        else:
            next_at = start + seconds
        disp.sync()
        time.sleep(max(0.0, next_at - time.monotonic()))
    disp.close()


# -- measurement helpers ------------------------------------------------------

def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def psnr(decoded: av.VideoFrame, bgra: np.ndarray) -> float:
    got = decoded.to_ndarray(format="rgb24").astype(np.float64)
    ref = bgra[:, :, 2::-1].astype(np.float64)
    mse = float(np.mean((got - ref) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{W}x{H}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        number = reader.readline().strip().decode()
    if not number:
        proc.kill()
        raise SystemExit("Xvfb did not start")
    return proc, f":{number}"


class Driver:
    """The drawing child process for one workload."""

    def __init__(self, display: str, workload: str, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--draw", workload, "--display", display,
             "--seconds", str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            raise SystemExit(f"driver failed to start: {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def wait(self) -> None:
        self.proc.wait(timeout=60)


# -- ours ---------------------------------------------------------------------

OURS_OPTIONS: dict[str, Any] = {}


async def run_ours(display: str, workload: str, seconds: float) -> dict[str, Any]:
    src = VideoSource(MediaConfig(display=display, width=W, height=H, fps=30, **OURS_OPTIONS))
    await src.start()
    driver = Driver(display, workload, seconds)
    sub = src.subscribe("h264", name="bench")
    received: list[tuple[float, av.Packet]] = []
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            try:
                pkt = await asyncio.wait_for(sub.get(), 0.1)
            except TimeoutError:
                continue
            received.append((time.monotonic(), pkt))

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.sleep(0.5)  # first keyframe and refresh settle
        enc0 = src.stats["frames_encoded"]["total"]  # type: ignore[index]
        bytes0 = src.stats["bytes_encoded"]["total"]  # type: ignore[index]
        samples_skip = {k: len(v) for k, v in src.timing_samples().items()}
        cpu0, t0 = cpu_seconds(), time.monotonic()
        driver.go()
        await asyncio.to_thread(driver.wait)
        wall = time.monotonic() - t0
        cpu = cpu_seconds() - cpu0
        frames = src.stats["frames_encoded"]["total"] - enc0  # type: ignore[index,operator]
        nbytes = src.stats["bytes_encoded"]["total"] - bytes0  # type: ignore[index,operator]
        # Quality: last frame encoded while the workload ran vs the final screen.
        await asyncio.sleep(0.08)  # in flight, before the 200 ms refresh
        dec = av.CodecContext.create("h264", "r")
        last = None
        for _, pkt in list(received):
            for f in dec.decode(pkt):
                last = f
        n_seen = len(received)
        screen = src._capture.snapshot() if src._capture is not None else None
        psnr_motion = psnr(last, screen) if last is not None and screen is not None else None
        await asyncio.sleep(0.5)  # refresh frame
        for _, pkt in received[n_seen:]:
            for f in dec.decode(pkt):
                last = f
        psnr_refresh = psnr(last, screen) if last is not None and screen is not None else None
        samples = {k: v[samples_skip[k]:] for k, v in src.timing_samples().items()}
    finally:
        stop.set()
        await consumer
        sub.close()
        await src.aclose()
    stats = src.stats
    return {
        "fps": frames / wall,
        "cpu_pct": 100 * cpu / wall,
        "bytes_per_s": nbytes / wall,
        "grab_ms": [pct(samples["grab"], 0.5), pct(samples["grab"], 0.95)],
        "convert_ms": [pct(samples["convert"], 0.5), pct(samples["convert"], 0.95)],
        "encode_ms": [pct(samples["encode_h264"], 0.5), pct(samples["encode_h264"], 0.95)],
        "psnr_db": psnr_motion,
        "psnr_after_refresh_db": psnr_refresh,
        "capture_backend": stats["capture_backend"],
        "damage": stats["damage"],
    }


# -- naive baseline -----------------------------------------------------------

def run_naive_thread(display: str, seconds: float, out: dict[str, Any],
                     started: threading.Event, done: threading.Event) -> None:
    sct = mss.MSS(display=display)
    mon = {"left": 0, "top": 0, "width": W, "height": H}
    ctx = av.CodecContext.create("libx264", "w")  # aiortc 1.16 H264Encoder settings
    ctx.width, ctx.height = W, H
    ctx.bit_rate = 1_000_000
    ctx.pix_fmt = "yuv420p"
    ctx.framerate = fractions.Fraction(30, 1)
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"level": "31", "tune": "zerolatency"}
    ctx.profile = "Baseline"
    grab_ms: list[float] = []
    conv_ms: list[float] = []
    enc_ms: list[float] = []
    nbytes = 0
    frames = 0
    last_bgra = None
    packets: list[av.Packet] = []
    started.wait()
    start = time.monotonic()
    i = 0
    while not done.is_set() and time.monotonic() - start < seconds + 5:
        i += 1
        t0 = time.perf_counter()
        bgra = np.array(sct.grab(mon))  # fresh 5.8 MB array per frame
        t1 = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(bgra, format="bgra").reformat(
            format="yuv420p", threads=1)
        frame.pts = i
        t2 = time.perf_counter()
        pkts = ctx.encode(frame)
        t3 = time.perf_counter()
        grab_ms.append((t1 - t0) * 1000)
        conv_ms.append((t2 - t1) * 1000)
        enc_ms.append((t3 - t2) * 1000)
        nbytes += sum(p.size for p in pkts)
        frames += 1
        packets += pkts
        last_bgra = bgra
        time.sleep(max(0.0, start + i / 30 - time.monotonic()))
    out.update(frames=frames, bytes=nbytes, grab=grab_ms, conv=conv_ms, enc=enc_ms,
               packets=packets, last_bgra=last_bgra)
    sct.close()


async def run_naive(display: str, workload: str, seconds: float) -> dict[str, Any]:
    driver = Driver(display, workload, seconds)
    out: dict[str, Any] = {}
    started, done = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_naive_thread, args=(display, seconds, out, started, done))
    thread.start()
    await asyncio.sleep(0.5)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    started.set()
    driver.go()
    await asyncio.to_thread(driver.wait)
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    done.set()
    await asyncio.to_thread(thread.join)
    dec = av.CodecContext.create("h264", "r")
    last = None
    for pkt in out["packets"]:
        for f in dec.decode(pkt):
            last = f
    return {
        "fps": out["frames"] / wall,
        "cpu_pct": 100 * cpu / wall,
        "bytes_per_s": out["bytes"] / wall,
        "grab_ms": [pct(out["grab"], 0.5), pct(out["grab"], 0.95)],
        "convert_ms": [pct(out["conv"], 0.5), pct(out["conv"], 0.95)],
        "encode_ms": [pct(out["enc"], 0.5), pct(out["enc"], 0.95)],
        "psnr_db": psnr(last, out["last_bgra"]) if last is not None else None,
    }


# -- main ---------------------------------------------------------------------

def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "/".join(f"{x:.1f}" for x in v)
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


async def measure(seconds: float) -> dict[str, Any]:
    """Every workload, ours and naive, on a fresh Xvfb."""
    xvfb, display = start_xvfb()
    results: dict[str, Any] = {"width": W, "height": H, "seconds": seconds,
                               "ours_options": OURS_OPTIONS,
                               "cpu_count": os.cpu_count(), "workloads": {}}
    try:
        for workload in WORKLOADS:
            ours = await run_ours(display, workload, seconds)
            naive = await run_naive(display, workload, seconds)
            ratios = {
                "cpu": ours["cpu_pct"] / naive["cpu_pct"] if naive["cpu_pct"] else None,
                "bytes": ours["bytes_per_s"] / naive["bytes_per_s"]
                if naive["bytes_per_s"] else None,
            }
            results["workloads"][workload] = {"ours": ours, "naive": naive, "ratio": ratios}
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=5)
    return results


def print_table(results: dict[str, Any]) -> None:
    cols = ["fps", "cpu_pct", "bytes_per_s", "grab_ms", "convert_ms", "encode_ms", "psnr_db"]
    print(f"{'workload':9} {'path':6} " + " ".join(f"{c:>14}" for c in cols))
    for workload, r in results["workloads"].items():
        for path in ("ours", "naive"):
            row = dict(r[path])
            row["bytes_per_s"] = row["bytes_per_s"] / 1e6 * 8  # Mbit/s
            print(f"{workload:9} {path:6} " + " ".join(f"{fmt(row[c]):>14}" for c in cols))
        print(f"{'':9} {'ratio':6} cpu ours/naive {fmt(r['ratio']['cpu'])}, "
              f"bytes ours/naive {fmt(r['ratio']['bytes'])}, "
              f"ours psnr after refresh {fmt(r['ours']['psnr_after_refresh_db'])} dB")
    print("(bytes_per_s column in Mbit/s; ms columns p50/p95; cpu_pct of one core, whole process)")


def run(opts: Any) -> Any:
    """The suite's entry point (``benchmarks/suite.py``): encoder side at 1600x900."""
    from benchmarks.suite import Figure, Result

    results = asyncio.run(measure(2.0 if opts.quick else 5.0))
    print_table(results)
    (opts.out_dir / "agent_pipeline.json").write_text(json.dumps(results, indent=2))
    result = Result("agent_pipeline", f"Capture -> convert -> encode at the runtime agent, "
                    f"{W}x{H} (no network, no viewer)")
    base = "naive fixed-tick pipeline (aiortc's H.264 settings)"
    for workload, r in results["workloads"].items():
        ours, naive = r["ours"], r["naive"]
        result.figures += [
            Figure(f"pipeline CPU, {workload}", ours["cpu_pct"], "% of a core", naive["cpu_pct"],
                   base),
            Figure(f"encoded bytes per second, {workload}", ours["bytes_per_s"] / 1000, "kB/s",
                   naive["bytes_per_s"] / 1000, base),
            Figure(f"encoder PSNR (last frame vs screen), {workload}", ours["psnr_db"], "dB",
                   naive["psnr_db"], base, lower_is_better=False,
                   note=f"after the refresh frame: {fmt(ours['psnr_after_refresh_db'])} dB"),
        ]
    result.notes.append(f"{results['seconds']} s per workload and path; CPU of the whole "
                        "process (getrusage), the drawing runs in a child process.")
    return result


async def main(seconds: float) -> None:
    results = await measure(seconds)
    print_table(results)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "agent_pipeline.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out_dir / 'agent_pipeline.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--draw")
    parser.add_argument("--display")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--interpolation", default=None, help="swscale flags, e.g. POINT")
    parser.add_argument("--convert-threads", type=int, default=2)
    args = parser.parse_args()
    WORKLOADS = tuple(args.workloads.split(","))
    OURS_OPTIONS.update(convert_interpolation=args.interpolation,
                        convert_threads=args.convert_threads)
    if args.draw:
        draw(args.display, args.draw, args.seconds)
    else:
        asyncio.run(main(args.seconds))
