"""Glass-to-glass latency of the viewer's transports in real Chromium.

For each transport of the viewer page (WebRTC, WebSocket + WebCodecs, and
x11vnc + noVNC on the same display as the baseline), in one run, on one
1600x900 session, three stimuli are drawn straight onto the session's X
display with Xlib:

* typing  — one glyph-sized block appears (a tiny change);
* scroll  — the whole screen of text-like stripes moves up by 24 px;
* motion  — a 480x320 textured block jumps across the screen.

Each stimulus also paints a 32x32 marker at (0,0) whose colour encodes the
step number (3 bits, one per channel, so codecs cannot blur it into the
wrong code). The page detects the marker where the picture is produced:
after each WebCodecs ``drawImage``, in ``requestVideoFrameCallback`` for
WebRTC, after noVNC's ``flip``. Latency = page detection time (epoch clock
``performance.timeOrigin + now()``) - time the X server finished drawing
(after ``XSync``). The WebRTC detection includes the detector's own
``drawImage`` of the video (~7-10 ms in software), so a second figure,
"frame", stamps every transport at the same point: the rendering update that
shows the change (rVFC entry for WebRTC, the next ``requestAnimationFrame``
after the canvas draw for ws/noVNC). For WebRTC the rVFC metadata
(``receiveTime``, ``presentationTime``) and per-frame getStats means (jitter
buffer, processing, decode) break the receive path down. The row
``webrtc-stock`` (``--transports``) is WebRTC with the playout-delay RTP
extension stripped from the page's offer: an A/B of ``agent_side.rtpext``.
Chromium's CPU (all its processes) and the bytes/s the page received are
sampled per scenario.

Prints a table with p50/p95 and ratios to noVNC; writes JSON to
``benchmarks/results/viewer_latency.json``.

Run as root (the local backend): ``.venv/bin/python benchmarks/viewer_latency.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from playwright.async_api import Page, async_playwright
from Xlib import display as xdisplay

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.app import create_app  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402

TOKEN = "bench-api-token-0123456789"
W, H = 1600, 900
TRANSPORTS = ("webrtc", "ws", "vnc")
VARIANTS = {"webrtc-stock": "webrtc"}
"""Extra rows for A/B runs: ``webrtc-stock`` is WebRTC with the playout-delay
RTP extension removed from the page's offer (so the agent cannot negotiate it)."""
SCENARIOS = ("typing", "scroll", "motion")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

DETECTOR_JS = r"""
() => {
  const state = { seen: [], last: -1, bytes: 0 };
  window.__lat = state;
  const code = (r, g, b) => ((r > 128) << 2) | ((g > 128) << 1) | (b > 128);
  const clock = () => performance.timeOrigin + performance.now();
  // meta.frame: the rendering update that shows the change. rVFC callbacks run in
  // it (their entry time); a canvas drawn by ws/noVNC is shown by the next one, so
  // it is stamped in the next requestAnimationFrame callback.
  const note = (px, meta) => {
    const c = code(px[0], px[1], px[2]);
    if (c !== state.last) {
      state.last = c;
      const entry = [c, clock(), meta || { frame: null }];
      state.seen.push(entry);
      if (entry[2].frame === null) requestAnimationFrame(() => { entry[2].frame = clock(); });
    }
  };
  const t = vrViewer.transport;
  if (t.name === 'ws') {
    const ctx = t.ctx, orig = t.draw.bind(t);
    t.draw = (frame) => { orig(frame); note(ctx.getImageData(16, 16, 1, 1).data); };
  } else if (t.name === 'webrtc') {
    const c = document.createElement('canvas'); c.width = 1; c.height = 1;
    const cx = c.getContext('2d', { willReadFrequently: true });
    const v = t.element;
    // rVFC metadata (epoch ms): when the frame arrived and was handed to the compositor.
    const epoch = (t) => (t === undefined ? null : performance.timeOrigin + t);
    const cb = (now, m) => {
      const entered = clock();
      cx.drawImage(v, 8, 8, 16, 16, 0, 0, 1, 1);
      note(cx.getImageData(0, 0, 1, 1).data, { frame: entered,
           received: epoch(m.receiveTime), presented: epoch(m.presentationTime) });
      v.requestVideoFrameCallback(cb);
    };
    v.requestVideoFrameCallback(cb);
  } else {
    const d = t.rfb._display, canvas = t.canvas;
    const ctx = canvas.getContext('2d');
    const orig = d.flip.bind(d);
    d.flip = (fromQueue) => { orig(fromQueue); note(ctx.getImageData(16, 16, 1, 1).data); };
  }
  return true;
}
"""

NO_PLAYOUT_DELAY_JS = r"""
(() => {
  const uri = 'http://www.webrtc.org/experiments/rtp-hdrext/playout-delay';
  const orig = RTCPeerConnection.prototype.createOffer;
  RTCPeerConnection.prototype.createOffer = async function (...args) {
    const offer = await orig.apply(this, args);
    const sdp = offer.sdp.split('\r\n').filter((l) => !l.endsWith(' ' + uri)).join('\r\n');
    return { type: offer.type, sdp };
  };
})();
"""

WS_COUNTER_JS = r"""
(() => {
  const Orig = window.WebSocket;
  window.__wsBytes = 0;
  window.WebSocket = function (...args) {
    const ws = new Orig(...args);
    ws.addEventListener('message', (e) => {
      const d = e.data;
      window.__wsBytes += typeof d === 'string' ? d.length : (d.byteLength || d.size || 0);
    });
    return ws;
  };
  window.WebSocket.prototype = Orig.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();
"""


class Stimulus:
    """Draws the scenarios on the session's X display."""

    COLORS = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255),
              (255, 0, 0), (255, 0, 255), (255, 255, 0), (255, 255, 255)]

    def __init__(self, socket_path: Path) -> None:
        self.link_dir = Path("/tmp/.X11-unix")
        number = 90
        while (self.link_dir / f"X{number}").exists():
            number += 1
        self.link = self.link_dir / f"X{number}"
        self.link.symlink_to(socket_path)
        self.d = xdisplay.Display(f":{number}")
        screen = self.d.screen()
        self.cmap = screen.default_colormap
        self.win = screen.root.create_window(0, 0, W, H, 0, screen.root_depth,
                                             override_redirect=True,
                                             background_pixel=screen.white_pixel)
        self.win.map()
        self.gc = self.win.create_gc()
        self.pixels: dict[tuple[int, int, int], int] = {}
        self.step = 0
        self.cursor = (60, 60)
        self.block_x = 0
        self.paint_text_background()
        self.d.sync()

    def pixel(self, rgb: tuple[int, int, int]) -> int:
        if rgb not in self.pixels:
            self.pixels[rgb] = self.cmap.alloc_color(rgb[0] * 257, rgb[1] * 257, rgb[2] * 257).pixel
        return self.pixels[rgb]

    def fill(self, rgb: tuple[int, int, int], x: int, y: int, w: int, h: int) -> None:
        self.gc.change(foreground=self.pixel(rgb))
        self.win.fill_rectangle(self.gc, x, y, w, h)

    def paint_text_background(self) -> None:
        self.fill((255, 255, 255), 0, 0, W, H)
        rnd = random.Random(7)
        for y in range(40, H, 24):
            x = 40
            while x < W - 80:
                word = rnd.randint(12, 80)
                self.fill((30, 30, 30), x, y, word, 12)
                x += word + 9

    def marker(self) -> int:
        self.step += 1
        code = self.step % 8
        self.fill(self.COLORS[code], 0, 0, 32, 32)
        return code

    def draw(self, scenario: str) -> tuple[int, float]:
        if scenario == "typing":
            x, y = self.cursor
            self.fill((20, 20, 20), x, y, 9, 16)
            x += 11
            if x > 900:
                x, y = 60, y + 20 if y < 500 else 60
                if y == 60:
                    self.fill((255, 255, 255), 40, 40, 900, 500)
            self.cursor = (x, y)
        elif scenario == "scroll":
            self.win.copy_area(self.gc, self.win, 0, 64, W, H - 64, 0, 40)
            self.fill((255, 255, 255), 0, H - 24, W, 24)
            x = 40
            while x < W - 80:
                word = random.randint(12, 80)
                self.fill((30, 30, 30), x, H - 20, word, 12)
                x += word + 9
        else:
            self.fill((255, 255, 255), self.block_x, 200, 480, 320)
            self.block_x = (self.block_x + 97) % (W - 480)
            for i in range(0, 320, 16):
                shade = (i * 7 + self.block_x) % 255
                self.fill((shade, 255 - shade, (shade * 3) % 255), self.block_x, 200 + i, 480, 16)
        code = self.marker()
        self.d.sync()
        return code, time.time() * 1000

    def close(self) -> None:
        try:
            self.win.destroy()
            self.d.close()
        except Exception as e:  # the session may already be gone
            print(f"closing the X connection: {e}", file=sys.stderr)
        finally:
            self.link.unlink(missing_ok=True)


def chromium_cpu_seconds(profile_marker: str) -> float:
    """CPU seconds of every Chromium process of our profile (browser + children)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    roots: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
        if profile_marker.encode() in cmdline and b"--type=" not in cmdline:
            roots.add(int(entry.name))
    total, frontier = 0.0, set(roots)
    seen: set[int] = set()
    while frontier:
        pid = frontier.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        frontier.update(p for p, (ppid, _) in stats.items() if ppid == pid)
    return total


async def page_bytes(page: Page) -> float:
    value = await page.evaluate("""async () => {
        const t = vrViewer.transport;
        if (t.name === 'webrtc') {
            let b = 0; (await t.pc.getStats()).forEach((s) => {
                if (s.type === 'inbound-rtp' && s.kind === 'video') b = s.bytesReceived; });
            return b;
        }
        return window.__wsBytes;
    }""")
    return float(value)


RTC_STATS_JS = """async () => {
    const t = vrViewer.transport;
    if (t.name !== 'webrtc') return null;
    let out = null;
    (await t.pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') out = {
            jitterBufferDelay: s.jitterBufferDelay, emitted: s.jitterBufferEmittedCount,
            processing: s.totalProcessingDelay, decode: s.totalDecodeTime,
            assembly: s.totalAssemblyTime || 0, decoded: s.framesDecoded};
    });
    return out;
}"""


def rtc_breakdown(before: dict[str, float] | None,
                  after: dict[str, float] | None) -> dict[str, float] | None:
    """Per-frame means (ms) of Chromium's receive path between two inbound-rtp samples."""
    if not before or not after:
        return None
    emitted = after["emitted"] - before["emitted"]
    decoded = after["decoded"] - before["decoded"]
    if emitted <= 0 or decoded <= 0:
        return None
    return {
        "jitter_buffer_ms": (after["jitterBufferDelay"] - before["jitterBufferDelay"]) / emitted * 1e3,
        "processing_ms": (after["processing"] - before["processing"]) / decoded * 1e3,
        "decode_ms": (after["decode"] - before["decode"]) / decoded * 1e3,
        "assembly_ms": (after["assembly"] - before["assembly"]) / decoded * 1e3,
        "frames_decoded": decoded,
    }


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


async def run_scenario(page: Page, stim: Stimulus, scenario: str, samples: int,
                       profile: str) -> dict[str, Any]:
    latencies: list[float] = []
    to_frame: list[float] = []
    to_receive: list[float] = []
    to_present: list[float] = []
    stages: list[list[float | None]] = []
    missed = 0
    for _ in range(3):  # warm-up
        stim.draw(scenario)
        await asyncio.sleep(0.15)
    cpu0, bytes0, t0 = chromium_cpu_seconds(profile), await page_bytes(page), time.monotonic()
    rtc0 = await page.evaluate(RTC_STATS_JS)
    for _ in range(samples):
        await page.evaluate("window.__lat.seen = []")
        code, t_draw = stim.draw(scenario)
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
    elapsed = time.monotonic() - t0
    cpu = (chromium_cpu_seconds(profile) - cpu0) / elapsed * 100
    rate = (await page_bytes(page) - bytes0) / elapsed
    rtc = rtc_breakdown(rtc0, await page.evaluate(RTC_STATS_JS))
    latencies.sort()
    return {
        "samples": len(latencies), "missed": missed,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p95_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] if latencies else None,
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        "chromium_cpu_pct": cpu, "bytes_per_s": rate, "latencies_ms": latencies,
        # WebRTC only: rVFC metadata p50s (draw -> frame received / handed to the
        # compositor) and getStats per-frame means of the receive path.
        "received_p50_ms": p50(to_receive), "presented_p50_ms": p50(to_present),
        # Every transport: draw -> the rendering update that shows the change
        # (rVFC entry for WebRTC; the next requestAnimationFrame after the canvas
        # draw for ws/noVNC), i.e. the same point in the page for all of them.
        "frame_p50_ms": p50(to_frame),
        "frame_p95_ms": sorted(to_frame)[min(len(to_frame) - 1, int(len(to_frame) * 0.95))]
        if to_frame else None,
        "receive_path": rtc,
        "stages_ms": stages,
        "stages_columns": ["detected", "frame", "received", "presented"],
    }


async def main(samples: int, out: Path, transports: tuple[str, ...] = TRANSPORTS) -> None:
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
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/visual-sessions", headers=auth,
                                 json={"resolution": f"{W}x{H}", "enable_recording": False}) as r:
                created = await r.json()
            sid, token = created["session_id"], created["tokens"]["control"]
            async with http.get(f"{base}/api/visual-sessions/{sid}?wait=running", headers=auth) as r:
                assert (await r.json())["status"] == "running"
            stim = Stimulus(config.runtime_dir / sid / "x11" / "X0")
            async with async_playwright() as p:
                for transport in transports:
                    browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                                      args=CHROMIUM_ARGS)
                    try:
                        page = await browser.new_page(viewport={"width": 1600, "height": 980})
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
                        profile = "playwright_chromiumdev_profile"
                        for scenario in SCENARIOS:
                            r = await run_scenario(page, stim, scenario, samples, profile)
                            results.setdefault(scenario, {})[transport] = r
                            extra = ""
                            if r["receive_path"]:
                                rp = r["receive_path"]
                                extra = (f"  received {r['received_p50_ms'] or 0:.1f}"
                                         f" presented {r['presented_p50_ms'] or 0:.1f} ms;"
                                         f" per frame: jitter buffer {rp['jitter_buffer_ms']:.1f}"
                                         f" processing {rp['processing_ms']:.1f}"
                                         f" decode {rp['decode_ms']:.1f} ms")
                            print(f"  {transport:7s} {scenario:7s} p50 {r['p50_ms'] or 0:7.1f} ms"
                                  f"  p95 {r['p95_ms'] or 0:7.1f} ms"
                                  f"  frame p50 {r['frame_p50_ms'] or 0:.1f} ms"
                                  f"  missed {r['missed']}{extra}",
                                  file=sys.stderr)
                    finally:
                        await browser.close()
            stim.close()
            stim = None
            await http.post(f"{base}/api/visual-sessions/{sid}/stop", headers=auth)
    finally:
        if stim is not None:
            stim.close()
        await runner.cleanup()

    print()
    header = f"{'scenario':8s} {'transport':12s} {'p50 ms':>8s} {'p95 ms':>8s} {'x noVNC':>8s} " \
             f"{'frame p50':>9s} {'frame p95':>9s} {'x noVNC':>8s} " \
             f"{'Chromium CPU':>12s} {'Mbit/s':>8s} {'n':>4s}"
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        base_p50 = results[scenario].get("vnc", {}).get("p50_ms")
        base_frame = results[scenario].get("vnc", {}).get("frame_p50_ms")
        for transport in transports:
            r = results[scenario][transport]
            ratio = r["p50_ms"] / base_p50 if r["p50_ms"] and base_p50 else None
            r["ratio_to_novnc_p50"] = ratio
            fratio = r["frame_p50_ms"] / base_frame if r["frame_p50_ms"] and base_frame else None
            r["ratio_to_novnc_frame_p50"] = fratio
            print(f"{scenario:8s} {transport:12s} {r['p50_ms'] or 0:8.1f} {r['p95_ms'] or 0:8.1f} "
                  f"{(f'{ratio:.2f}x') if ratio else '-':>8s} "
                  f"{r['frame_p50_ms'] or 0:9.1f} {r['frame_p95_ms'] or 0:9.1f} "
                  f"{(f'{fratio:.2f}x') if fratio else '-':>8s} {r['chromium_cpu_pct']:11.0f}% "
                  f"{r['bytes_per_s'] * 8 / 1e6:8.2f} {r['samples']:4d}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"resolution": f"{W}x{H}", "samples_per_cell": samples,
                               "baseline": "x11vnc (-shared -forever -ncache 0 -defer 5 -wait 5 "
                                           "-nowait_bog -noshm) + noVNC 1.4",
                               "results": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--transports", default=",".join(TRANSPORTS),
                        help="comma-separated rows, in order (default %(default)s; "
                             "webrtc-stock = WebRTC without the playout-delay extension)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "viewer_latency.json")
    args = parser.parse_args()
    chosen = tuple(args.transports.split(","))
    unknown = set(chosen) - set(TRANSPORTS) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown transports {sorted(unknown)}; choose from "
                     f"{', '.join(TRANSPORTS + tuple(VARIANTS))}")
    asyncio.run(main(args.samples, args.out, chosen))
