"""Glass-to-glass latency, picture quality and cost of the viewer's transports in Chromium.

For each transport of the viewer page (WebRTC, WebSocket + WebCodecs, the
session's own noVNC fallback) and the baselines — x11vnc + noVNC on the same
display, tuned (``-defer 5 -wait 5 -nowait_bog``) and with default settings,
started by this program and reached through a one-hop WebSocket bridge (as
websockify would), shown by the same page's noVNC — in one run, on one
session per resolution, three stimuli are drawn straight onto the session's X
display with Xlib (each step inside a server grab, so no capture sees half a
step):

* typing  — one glyph-sized block appears (a tiny change), one keystroke at
  a time with a pause after each (80-160 ms);
* scroll  — continuous scrolling at 30 steps/s: every step moves the whole
  page of anti-aliased pseudo-glyph text (precomputed, 7x14 px glyphs in
  24 px lines, like a terminal or a web page) up by one 24 px line and draws
  a new line at the bottom;
* motion  — continuous panning at 30 steps/s: a 1200x700 viewport shows a
  precomputed deterministic photo-like texture (smooth colour gradients,
  multi-octave value noise, hard-edged shapes and per-pixel grain) that pans
  by 4 px right and 3 px down per step (bouncing at the texture's edges), so
  all 840k viewport pixels change every step, as with a video or a photo being
  dragged. The texture and the text live in server-side pixmaps and are
  ``CopyArea``'d, so the drawing costs the X client nothing.

Each step also paints two 32x32 markers at (0,0) and (32,0) whose colours
encode the step number modulo 64 (3 bits per block, one per channel, so
codecs cannot blur it into the wrong code). The page detects the marker
where the picture is produced: after each WebCodecs ``drawImage``, in
``requestVideoFrameCallback`` for WebRTC, after noVNC's ``flip``. Latency =
page detection time (epoch clock ``performance.timeOrigin + now()``) - time
the X server finished drawing (after ``XSync``). In the continuous workloads
a transport may coalesce steps (show only the newest): every step shown is
matched to the latest step drawn with its code (exact while latency < 64
steps = 2.1 s), steps never shown are counted as dropped in the JSON, and
``any_change_*`` gives, over all steps, the time until that step or a newer
one was on screen. A code that maps to a step older than one already shown
is a torn marker (its two blocks from different steps: x11vnc reads the
screen piecewise) and is dropped, counted as ``torn_markers``. Every scenario
starts from the same page of text. The WebRTC detection includes the detector's own ``drawImage`` of the video
(~7-10 ms in software), so a second figure,
"frame", stamps every transport at the same point: the rendering update that
shows the change (rVFC entry for WebRTC, the next ``requestAnimationFrame``
after the canvas draw for ws/noVNC). For WebRTC the rVFC metadata
(``receiveTime``, ``presentationTime``) and per-frame getStats means (jitter
buffer, processing, decode) break the receive path down. The row
``webrtc-stock`` (``--transports``) is WebRTC with the playout-delay RTP
extension stripped from the page's offer: an A/B of ``agent_side.rtpext``.
Chromium's CPU (all its processes) and the bytes/s the page received are
sampled per scenario.

Picture quality: for some marker codes (every 4th keystroke, every 8th
step) the page copies an area of what it shows (the video or the canvas)
back; its RGB PSNR against the source pixels of that step (read back from X
right after drawing) is reported. Server CPU: the runtime agent (plus its
x11vnc for the ``vnc`` row) or the baseline's x11vnc. ``VR_BENCH_DUMP=DIR``
writes each compared pair as a PPM.

Prints a table with p50/p95 and ratios to the tuned baseline; writes JSON to
``benchmarks/results/viewer_latency.json``. In the suite
(``python -m benchmarks``), :func:`run` covers every resolution.

Run as root (the local backend): ``.venv/bin/python benchmarks/viewer_latency.py
[--samples 60] [--resolution 1600x900] [--transports webrtc,ws,...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import find_agent_pid  # noqa: E402
from benchmarks.page_probe import (  # noqa: E402
    DETECTOR_JS,
    GRAB_AREA,
    GRAB_CODES,
    NO_PLAYOUT_DELAY_JS,
    TAKE_SEEN_JS,
    WS_COUNTER_JS,
    Probe,
    arm_grabs,
    picture_quality,
)
from benchmarks.stimulus import MARKER_NOTE, STEP_HZ, WORKLOADS, Stimulus  # noqa: E402
from benchmarks.vnc_baseline import X11VNC_COMMON, X11VNC_TUNING, VncBaseline  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402

TOKEN = "bench-api-token-0123456789"
W, H = 1600, 900
TRANSPORTS = ("webrtc", "ws", "vnc", "novnc-tuned", "novnc-default")
QUICK_TRANSPORTS = ("webrtc", "ws", "novnc-tuned")  # the default x11vnc: full mode only
BASELINES = {"novnc-tuned": "x11vnc + noVNC (tuned)", "novnc-default": "x11vnc + noVNC (default)"}
"""Rows whose page talks to an x11vnc this program starts on the same display (through
a one-hop WebSocket bridge, as websockify would), instead of the session's own."""
VARIANTS = {"webrtc-stock": "webrtc", "novnc-tuned": "vnc", "novnc-default": "vnc"}
"""Page transport of each extra row. ``webrtc-stock`` (A/B runs) is WebRTC with the
playout-delay RTP extension removed from the page's offer (so the agent cannot
negotiate it)."""
SCENARIOS = ("typing", "scroll", "motion")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Pace:
    """How long the untimed parts of a scenario take (quick mode shortens them)."""

    settle_s: float = 1.5
    """After the start screen is painted, before anything is timed."""
    warmup_steps: int = STEP_HZ // 2
    """Continuous workloads: steps drawn before the timed ones."""
    warmup_pause_s: float = 0.5
    min_steps: int = 60
    """Continuous workloads: at least this many timed steps (more with more samples)."""


QUICK_PACE = Pace(settle_s=0.5, warmup_steps=8, warmup_pause_s=0.25, min_steps=45)


async def run_scenario(page: Page, stim: Stimulus, scenario: str, samples: int,
                       probe: Probe, pace: Pace = Pace()) -> dict[str, Any]:
    latencies: list[float] = []
    to_frame: list[float] = []
    to_receive: list[float] = []
    to_present: list[float] = []
    stages: list[list[float | None]] = []
    missed = 0
    stim.paint_text_background()  # same start screen for every transport
    await asyncio.sleep(pace.settle_s)  # let the full-screen repaint reach the page first
    await arm_grabs(page, scenario)
    if scenario != "typing":
        return await run_continuous(page, stim, scenario, samples, probe, pace)
    for _ in range(3):  # warm-up
        stim.draw(scenario)
        await asyncio.sleep(0.15)
    await page.evaluate("window.__lat.grabs = []")
    drawn: list[tuple[int, float]] = []
    sources: dict[int, np.ndarray] = {}
    await probe.start()
    for _ in range(samples):
        await page.evaluate("window.__lat.seen = []")
        code, t_draw = stim.draw(scenario)
        drawn.append((code, t_draw))
        if code in GRAB_CODES[scenario]:
            sources[len(drawn) - 1] = stim.snapshot(GRAB_AREA[scenario])
        deadline = time.monotonic() + 3
        hit = None
        while time.monotonic() < deadline:
            seen = await page.evaluate("window.__lat.seen")
            entry = next((e for e in seen if e[0] == code), None)
            if entry is not None and entry[2]["frame"] is not None:
                hit, meta = entry[1], entry[2]
                to_frame.append(meta["frame"] - t_draw)
                if meta.get("received"):
                    to_receive.append(meta["received"] - t_draw)
                if meta.get("presented"):
                    to_present.append(meta["presented"] - t_draw)
                stages.append([hit - t_draw, meta["frame"] - t_draw]
                              + [meta[k] - t_draw if meta.get(k) else None
                                 for k in ("received", "presented")])
                break
            await asyncio.sleep(0.005)
        if hit is None:
            missed += 1
        else:
            latencies.append(hit - t_draw)
        await asyncio.sleep(random.uniform(0.08, 0.16))
    sampled = await probe.stop()
    quality = await picture_quality(page, drawn, sources, GRAB_AREA[scenario])
    latencies.sort()
    return {
        "samples": len(latencies), "missed": missed,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p95_ms": pct(latencies, 0.95),
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        **sampled, "latencies_ms": latencies,
        "psnr_db": p50(quality), "psnr_all_db": quality,
        # WebRTC only: rVFC metadata p50s (draw -> frame received / handed to the
        # compositor) and getStats per-frame means of the receive path.
        "received_p50_ms": p50(to_receive), "presented_p50_ms": p50(to_present),
        # Every transport: draw -> the rendering update that shows the change
        # (rVFC entry for WebRTC; the next requestAnimationFrame after the canvas
        # draw for ws/noVNC), i.e. the same point in the page for all of them.
        "frame_p50_ms": p50(to_frame), "frame_p95_ms": pct(to_frame, 0.95),
        "stages_ms": stages,
        "stages_columns": ["detected", "frame", "received", "presented"],
    }




def pct(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else None


async def run_continuous(page: Page, stim: Stimulus, scenario: str, samples: int,
                         probe: Probe, pace: Pace = Pace()) -> dict[str, Any]:
    """Draws ``max(pace.min_steps, 4 * samples)`` steps at STEP_HZ while the page is polled;
    matches every step shown (its marker code) to the latest step drawn with that code."""
    period = 1 / STEP_HZ
    for _ in range(pace.warmup_steps):  # warm-up: the transports settle on the motion
        stim.draw(scenario)
        await asyncio.sleep(period)
    await asyncio.sleep(pace.warmup_pause_s)
    await page.evaluate("window.__lat.seen = []; window.__lat.grabs = []")
    steps = max(pace.min_steps, samples * 4)
    drawn: list[tuple[int, float]] = []
    sources: dict[int, np.ndarray] = {}
    seen: list[list[Any]] = []

    async def drawer() -> None:
        start = time.monotonic()
        for i in range(steps):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            drawn.append(stim.draw(scenario))
            if drawn[-1][0] in GRAB_CODES[scenario]:
                sources[len(drawn) - 1] = stim.snapshot(GRAB_AREA[scenario])

    await probe.start()
    task = asyncio.create_task(drawer())
    try:
        while not task.done():
            await asyncio.sleep(0.1)
            seen += await page.evaluate(TAKE_SEEN_JS)
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await task
    sampled = await probe.stop()
    last_code = drawn[-1][0]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(e[0] == last_code and e[1] >= drawn[-1][1]
                                                  for e in seen):
        await asyncio.sleep(0.05)
        seen += await page.evaluate(TAKE_SEEN_JS)
    quality = await picture_quality(page, drawn, sources, GRAB_AREA[scenario])

    shown: dict[int, tuple[float, dict[str, Any]]] = {}  # step index -> (detected, meta)
    # A transport never shows steps out of order, so a code that maps to a step older
    # than one already shown is a torn marker: the two blocks come from different steps
    # (x11vnc reads the screen in pieces over time, and noVNC draws rectangle by
    # rectangle); matched naively it would alias to a step up to 63 steps (2 s) back.
    torn = 0
    newest = -1
    for code, t_det, meta in sorted(seen, key=lambda e: e[1]):
        idx = next((i for i in range(len(drawn) - 1, -1, -1)
                    if drawn[i][0] == code and drawn[i][1] <= t_det), None)
        if idx is not None and idx < newest:
            torn += 1
            continue
        if idx is not None and idx not in shown:
            shown[idx] = (t_det, meta)
            newest = idx
    latencies, to_frame, to_receive, to_present = [], [], [], []
    stages: list[list[float | None]] = []
    for idx in sorted(shown):
        t_draw = drawn[idx][1]
        t_det, meta = shown[idx]
        latencies.append(t_det - t_draw)
        to_frame.append(meta["frame"] - t_draw)
        if meta.get("received"):
            to_receive.append(meta["received"] - t_draw)
        if meta.get("presented"):
            to_present.append(meta["presented"] - t_draw)
        stages.append([t_det - t_draw, meta["frame"] - t_draw]
                      + [meta[k] - t_draw if meta.get(k) else None
                         for k in ("received", "presented")])
    # Every step: time until it or a newer step is on screen (coalescing included).
    any_change: list[float] = []
    missed = 0
    first_after = None
    for idx in range(len(drawn) - 1, -1, -1):
        if idx in shown and (first_after is None or shown[idx][0] < first_after):
            first_after = shown[idx][0]
        if first_after is None or first_after - drawn[idx][1] > 3000:
            missed += 1
        else:
            any_change.append(first_after - drawn[idx][1])
    latencies.sort()
    return {
        "samples": len(latencies), "missed": missed,
        "steps_drawn": steps, "steps_shown": len(shown), "steps_dropped": steps - len(shown),
        "torn_markers": torn, "step_hz": STEP_HZ,
        "p50_ms": p50(latencies), "p95_ms": pct(latencies, 0.95),
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        "any_change_p50_ms": p50(any_change), "any_change_p95_ms": pct(any_change, 0.95),
        **sampled, "latencies_ms": latencies,
        "psnr_db": p50(quality), "psnr_all_db": quality,
        "received_p50_ms": p50(to_receive), "presented_p50_ms": p50(to_present),
        "frame_p50_ms": p50(to_frame), "frame_p95_ms": pct(to_frame, 0.95),
        "stages_ms": stages,
        "stages_columns": ["detected", "frame", "received", "presented"],
    }




# -- one resolution ------------------------------------------------------------------


def describe(r: dict[str, Any]) -> str:
    extra = ""
    if r["receive_path"]:
        rp = r["receive_path"]
        extra = (f"  received {r['received_p50_ms'] or 0:.1f}"
                 f" presented {r['presented_p50_ms'] or 0:.1f} ms;"
                 f" per frame: jitter buffer {rp['jitter_buffer_ms']:.1f}"
                 f" processing {rp['processing_ms']:.1f} decode {rp['decode_ms']:.1f} ms")
    if "steps_drawn" in r:
        extra = (f"  shown {r['steps_shown']}/{r['steps_drawn']} steps,"
                 f" any-change p50 {r['any_change_p50_ms'] or 0:.1f}"
                 f" p95 {r['any_change_p95_ms'] or 0:.1f} ms" + extra)
    return (f"p50 {r['p50_ms'] or 0:7.1f} ms  p95 {r['p95_ms'] or 0:7.1f} ms"
            f"  frame p50 {r['frame_p50_ms'] or 0:.1f} ms  PSNR {r['psnr_db'] or 0:.1f} dB"
            f"  missed {r['missed']}{extra}")


async def measure(width: int, height: int, samples: int,
                  transports: tuple[str, ...] = TRANSPORTS, pace: Pace = Pace()
                  ) -> dict[str, dict[str, Any]]:
    """One session at *width* x *height*; every transport, every scenario.
    Returns ``{scenario: {transport: result}}``."""
    state = Path(tempfile.mkdtemp(prefix="vr-bench-"))
    config = GatewayConfig(state_dir=state, token=TOKEN, port=0, apps=("xterm",),
                           poll_interval_s=0.5)
    app = create_app(config, TOKEN)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    results: dict[str, dict[str, Any]] = {}
    stim: Stimulus | None = None
    vnc: VncBaseline | None = None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/visual-sessions", headers=auth,
                                 json={"resolution": f"{width}x{height}",
                                       "enable_recording": False}) as r:
                created = await r.json()
            sid, token = created["session_id"], created["tokens"]["control"]
            async with http.get(f"{base}/api/visual-sessions/{sid}?wait=running", headers=auth) as r:
                assert (await r.json())["status"] == "running"
            agent_pid = find_agent_pid(sid)
            stim = Stimulus(config.runtime_dir / sid / "x11" / "X0", width, height)
            vnc = VncBaseline(stim.display_name, state)
            await vnc.start()
            async with async_playwright() as p:
                for transport in transports:
                    t_transport = time.monotonic()
                    mode = transport.removeprefix("novnc-") if transport in BASELINES else None
                    server_pids = (await vnc.x11vnc(mode),) if mode else (agent_pid,)
                    browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                                      args=CHROMIUM_ARGS)
                    try:
                        # bypass_csp: the page's CSP forbids eval, which Playwright's
                        # wait_for_function uses; the page itself runs unchanged
                        page = await browser.new_page(
                            viewport={"width": width, "height": height + 80}, bypass_csp=True)
                        if mode:
                            await page.add_init_script(
                                f"window.__vncUrl = {json.dumps(vnc.url(mode))};")
                        await page.add_init_script(WS_COUNTER_JS)
                        if transport == "webrtc-stock":
                            await page.add_init_script(NO_PLAYOUT_DELAY_JS)
                        page_transport = VARIANTS.get(transport, transport)
                        await page.goto(
                            f"{base}/sessions/{sid}/?token={token}&transport={page_transport}")
                        await page.wait_for_function(
                            "window.vrViewer && vrViewer.state === 'connected' && "
                            "vrViewer.transport.framesShown > 0", timeout=30000)
                        await page.evaluate(DETECTOR_JS)
                        probe = Probe(page, "playwright_chromiumdev_profile", server_pids)
                        t_ready = time.monotonic()
                        for scenario in SCENARIOS:
                            t_scenario = time.monotonic()
                            r = await run_scenario(page, stim, scenario, samples, probe, pace)
                            r["seconds"] = time.monotonic() - t_scenario
                            r["server"] = f"x11vnc ({mode})" if mode else "runtime agent" + (
                                " + its x11vnc" if transport == "vnc" else "")
                            results.setdefault(scenario, {})[transport] = r
                            print(f"  {width}x{height} {transport:13s} {scenario:7s} {describe(r)}"
                                  f"  ({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
                        print(f"  {transport}: {t_ready - t_transport:.1f} s to a connected page, "
                              f"{time.monotonic() - t_transport:.1f} s in all", file=sys.stderr)
                    finally:
                        await browser.close()
            await http.post(f"{base}/api/visual-sessions/{sid}/stop", headers=auth)
    finally:
        if vnc is not None:
            await vnc.aclose()
        if stim is not None:
            stim.close()
        await runner.cleanup()
        shutil.rmtree(state, ignore_errors=True)
    return results


def print_table(results: dict[str, dict[str, Any]], resolution: str,
                transports: tuple[str, ...]) -> None:
    print()
    print(f"workloads ({resolution}; n = keystrokes (typing) or steps (scroll, motion) whose "
          "marker was seen; steps coalesced away: JSON steps_dropped):")
    for name, note in WORKLOADS.items():
        print(f"  {name:7s} {note}")
    print(f"  markers: {MARKER_NOTE}")
    print()
    header = f"{'scenario':8s} {'transport':13s} {'p50 ms':>8s} {'p95 ms':>8s} {'x base':>7s} " \
             f"{'frame p50':>9s} {'frame p95':>9s} {'PSNR dB':>7s} " \
             f"{'Chromium':>8s} {'server':>7s} {'Mbit/s':>7s} {'n':>4s}"
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        base_p50 = results[scenario].get("novnc-tuned", {}).get("p50_ms")
        for transport in transports:
            r = results[scenario][transport]
            ratio = r["p50_ms"] / base_p50 if r["p50_ms"] and base_p50 else None
            r["ratio_to_novnc_tuned_p50"] = ratio
            print(f"{scenario:8s} {transport:13s} {r['p50_ms'] or 0:8.1f} {r['p95_ms'] or 0:8.1f} "
                  f"{(f'{ratio:.2f}x') if ratio else '-':>7s} "
                  f"{r['frame_p50_ms'] or 0:9.1f} {r['frame_p95_ms'] or 0:9.1f} "
                  f"{r['psnr_db'] or 0:7.1f} {r['chromium_cpu_pct']:7.0f}% "
                  f"{r['server_cpu_pct'] or 0:6.0f}% "
                  f"{r['bytes_per_s'] * 8 / 1e6:7.2f} {r['samples']:4d}")


TRANSPORT_LABEL = {"webrtc": "WebRTC", "ws": "WebSocket + WebCodecs", "vnc": "noVNC (ours)",
                   "webrtc-stock": "WebRTC without playout-delay",
                   **BASELINES}


LATENCY_TARGETS: dict[tuple[str, str], str] = {
    ("webrtc", "typing"): "<= 50 ms",
    ("webrtc", "scroll"): "<= 0.7x baseline",
    ("webrtc", "motion"): "<= 0.7x baseline",
    ("ws", "typing"): "<= 1.0x baseline",
    ("ws", "scroll"): "<= 0.5x baseline",
    ("ws", "motion"): "<= 0.5x baseline",
}
"""Issue 4's p50 targets against tuned x11vnc + noVNC (our noVNC fallback has none)."""


def figures_for(results: dict[str, dict[str, Any]], resolution: str,
                transports: tuple[str, ...]) -> tuple[list[Any], dict[str, list[float]]]:
    """Suite figures (baseline: x11vnc + noVNC tuned; the default one in the note)."""
    from benchmarks.suite import Figure

    figs: list[Figure] = []
    series: dict[str, list[float]] = {}
    base_name = BASELINES["novnc-tuned"]
    for scenario in SCENARIOS:
        rows = results.get(scenario, {})
        tuned, default = rows.get("novnc-tuned", {}), rows.get("novnc-default", {})
        for transport in transports:
            r = rows.get(transport)
            if r is None:
                continue
            series[f"{scenario} {resolution} Chromium: {TRANSPORT_LABEL[transport]}"] = \
                r["latencies_ms"]
            if transport in BASELINES:
                continue
            where = f"{scenario}, {TRANSPORT_LABEL[transport]} in Chromium, {resolution}"

            def vs_default(key: str, value: float | None,
                           default: dict[str, Any] = default) -> str:
                other = default.get(key)
                return f"{value / other:.2f}x default x11vnc" if value and other else ""

            n = f"n={r['samples']}"
            if "steps_drawn" in r:
                n += f" of {r['steps_drawn']} steps"
                if r.get("torn_markers"):
                    n += f", {r['torn_markers']} torn"
            figs += [
                Figure(f"glass-to-glass p50, {where}", r["p50_ms"], "ms", tuned.get("p50_ms"),
                       base_name, target=LATENCY_TARGETS.get((transport, scenario)),
                       note=f"{n}; {vs_default('p50_ms', r['p50_ms'])}"),
                Figure(f"glass-to-glass p95, {where}", r["p95_ms"], "ms", tuned.get("p95_ms"),
                       base_name, note=vs_default("p95_ms", r["p95_ms"])),
                Figure(f"bytes per second received, {where}", r["bytes_per_s"] / 1000, "kB/s",
                       (tuned.get("bytes_per_s") or 0) / 1000 or None, base_name,
                       note=vs_default("bytes_per_s", r["bytes_per_s"])),
                Figure(f"picture quality received (PSNR vs source), {where}", r["psnr_db"],
                       "dB", tuned.get("psnr_db"), base_name, lower_is_better=False,
                       note=f"{len(r['psnr_all_db'])} pictures; "
                            f"{vs_default('psnr_db', r['psnr_db'])}"),
                Figure(f"viewer (Chromium) CPU, {where}", r["chromium_cpu_pct"], "% of a core",
                       tuned.get("chromium_cpu_pct"), base_name,
                       target=("<= 0.5x baseline" if transport in ("webrtc", "ws")
                               and scenario != "typing" else None),
                       note=vs_default("chromium_cpu_pct", r["chromium_cpu_pct"])),
                Figure(f"server CPU ({r['server']}), {where}", r["server_cpu_pct"],
                       "% of a core", tuned.get("server_cpu_pct"), "x11vnc (tuned)",
                       note=vs_default("server_cpu_pct", r["server_cpu_pct"])),
            ]
        for key, label in (("novnc-tuned", "tuned"), ("novnc-default", "default")):
            b = rows.get(key)
            if b is None:
                continue
            where = f"{scenario}, {BASELINES[key]}, {resolution}"
            figs += [
                Figure(f"baseline glass-to-glass p50 / p95, {where}", b["p50_ms"], "ms",
                       note=f"p95 {b['p95_ms'] or 0:.1f} ms, n={b['samples']}"
                            + (f", {b['torn_markers']} torn" if b.get("torn_markers") else "")),
                Figure(f"baseline x11vnc ({label}) + Chromium CPU, {where}",
                       (b["server_cpu_pct"] or 0) + b["chromium_cpu_pct"], "% of a core",
                       note=f"x11vnc {b['server_cpu_pct'] or 0:.0f} %, Chromium "
                            f"{b['chromium_cpu_pct']:.0f} %, {b['bytes_per_s'] / 1000:.0f} kB/s, "
                            f"PSNR {b['psnr_db'] or 0:.1f} dB"),
            ]
    return figs, series


def run(opts: Any) -> Any:
    """The suite's entry point (``benchmarks/suite.py``)."""
    from benchmarks.suite import Result

    transports = QUICK_TRANSPORTS if opts.quick else TRANSPORTS
    result = Result("viewer_latency", "Viewer latency, quality and cost in Chromium "
                    "(WebRTC, WebSocket + WebCodecs, noVNC) vs x11vnc + noVNC")
    latency: dict[str, list[float]] = {}
    raw: dict[str, Any] = {}
    for resolution in opts.resolutions:
        width, height = (int(v) for v in resolution.split("x"))
        load0 = os.getloadavg()
        results = asyncio.run(measure(width, height, opts.samples, transports,
                                      QUICK_PACE if opts.quick else Pace()))
        print_table(results, resolution, transports)
        figs, series = figures_for(results, resolution, transports)
        result.figures += figs
        latency.update(series)
        raw[resolution] = results
        result.notes.append(f"{resolution}: load average {load0[0]:.2f} -> "
                            f"{os.getloadavg()[0]:.2f}")
    result.series["latency_ms"] = latency
    result.notes += [
        "Stimulus drawn with Xlib on the session's display; latency = X server done drawing "
        "(after XSync) -> marker seen in the page, both on the epoch clock.",
        *(f"{k}: {v}" for k, v in WORKLOADS.items()),
        f"markers: {MARKER_NOTE}",
        "PSNR: RGB of the picture the page received (video/canvas copied back for a marker "
        "step) against the source pixels read back from X right after that step was drawn.",
        "Baselines: x11vnc " + " ".join(X11VNC_COMMON) + " (+ " + " ".join(X11VNC_TUNING)
        + " when tuned) on the same display, through a one-hop WebSocket bridge, in the same "
        "page's noVNC. Ratio = ours / tuned; the note gives ours / default.",
    ]
    out = opts.out_dir / "viewer_latency.json"
    out.write_text(json.dumps({"workloads": WORKLOADS, "markers": MARKER_NOTE,
                               "samples_per_cell": opts.samples, "results": raw}, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--resolution", default="1600x900")
    parser.add_argument("--transports", default=",".join(TRANSPORTS),
                        help="comma-separated rows, in order (default %(default)s; "
                             "webrtc-stock = WebRTC without the playout-delay extension)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "viewer_latency.json")
    args = parser.parse_args()
    chosen = tuple(args.transports.split(","))
    unknown = set(chosen) - set(TRANSPORTS) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown transports {sorted(unknown)}; choose from "
                     f"{', '.join(dict.fromkeys(TRANSPORTS + tuple(VARIANTS)))}")
    width, height = (int(v) for v in args.resolution.split("x"))
    results = asyncio.run(measure(width, height, args.samples, chosen))
    print_table(results, args.resolution, chosen)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"resolution": args.resolution, "samples_per_cell": args.samples,
                                    "workloads": WORKLOADS, "markers": MARKER_NOTE,
                                    "load_average": os.getloadavg(), "results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
