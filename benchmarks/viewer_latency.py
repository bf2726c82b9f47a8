"""Glass-to-glass latency of the viewer's transports in real Chromium.

For each transport of the viewer page (WebRTC, WebSocket + WebCodecs, and
x11vnc + noVNC on the same display as the baseline), in one run, on one
1600x900 session, three stimuli are drawn straight onto the session's X
display with Xlib:

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
one was on screen. Every scenario starts from the same page of text. The
WebRTC detection includes the detector's own ``drawImage`` of the video
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
import numpy as np
from aiohttp import web
from playwright.async_api import Page, async_playwright
from Xlib import X
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
  const bits = (px, o) => ((px[o] > 128) << 2) | ((px[o + 1] > 128) << 1) | (px[o + 2] > 128);
  // low 3 bits: block at (0,0); high 3 bits: block at (32,0); px holds both centres
  const code = (px, o2) => bits(px, 0) | (bits(px, o2) << 3);
  const clock = () => performance.timeOrigin + performance.now();
  // meta.frame: the rendering update that shows the change. rVFC callbacks run in
  // it (their entry time); a canvas drawn by ws/noVNC is shown by the next one, so
  // it is stamped in the next requestAnimationFrame callback.
  const note = (px, meta, o2 = 128) => {
    const c = code(px, o2);
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
    t.draw = (frame) => { orig(frame); note(ctx.getImageData(16, 16, 33, 1).data); };
  } else if (t.name === 'webrtc') {
    const c = document.createElement('canvas'); c.width = 2; c.height = 1;
    const cx = c.getContext('2d', { willReadFrequently: true });
    const v = t.element;
    // rVFC metadata (epoch ms): when the frame arrived and was handed to the compositor.
    const epoch = (t) => (t === undefined ? null : performance.timeOrigin + t);
    const cb = (now, m) => {
      const entered = clock();
      cx.drawImage(v, 8, 8, 16, 16, 0, 0, 1, 1);
      cx.drawImage(v, 40, 8, 16, 16, 1, 0, 1, 1);
      note(cx.getImageData(0, 0, 2, 1).data, { frame: entered,
           received: epoch(m.receiveTime), presented: epoch(m.presentationTime) }, 4);
      v.requestVideoFrameCallback(cb);
    };
    v.requestVideoFrameCallback(cb);
  } else {
    const d = t.rfb._display, canvas = t.canvas;
    const ctx = canvas.getContext('2d');
    const orig = d.flip.bind(d);
    d.flip = (fromQueue) => { orig(fromQueue); note(ctx.getImageData(16, 16, 33, 1).data); };
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


STEP_HZ = 30
"""Step rate of the continuous workloads (scroll, motion)."""
LINE_H = 24
TEXT_LINES = 64
VIEW_X, VIEW_Y, VIEW_W, VIEW_H = 200, 100, 1200, 700
TEX_W, TEX_H = 1600, 1000
PAN_DX, PAN_DY = 4, 3
WORKLOADS = {
    "typing": "one 9x16 glyph-sized block per keystroke, 80-160 ms pause after each "
              "(latency of isolated small changes)",
    "scroll": f"continuous at {STEP_HZ} steps/s: the full-screen page of anti-aliased "
              f"pseudo-glyph text (7x14 px glyphs, {LINE_H} px lines) moves up one line per "
              "step and a new line is drawn at the bottom",
    "motion": f"continuous at {STEP_HZ} steps/s: a {VIEW_W}x{VIEW_H} viewport pans a "
              f"deterministic photo-like {TEX_W}x{TEX_H} texture (gradients, value noise, "
              f"shapes, grain) by ({PAN_DX},{PAN_DY}) px per step: every viewport pixel changes",
}
MARKER_NOTE = ("two 32x32 marker blocks at (0,0),(32,0) encode step mod 64; continuous "
               "workloads: each step shown is matched to the latest step drawn with its code; "
               "steps coalesced by the transport count as dropped (JSON); any_change = time "
               "until that step or a newer one is on screen")


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smoothly interpolated random grid (h, w, 3) in [0, 1]."""
    grid = rng.random((h // cell + 2, w // cell + 2, 3))
    y, x = np.arange(h) / cell, np.arange(w) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None, None], (fx * fx * (3 - 2 * fx))[None, :, None]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def photo_texture(h: int, w: int, seed: int = 11) -> np.ndarray:
    """A deterministic photo-like RGB image (uint8): gradients + detail at every scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for ch in range(3):  # broad colour gradients ("sky", "light")
        fx, fy, ph = rng.uniform(0.5, 2.0) / w, rng.uniform(0.5, 2.0) / h, rng.uniform(0, 6.3)
        img[..., ch] = 0.5 + 0.35 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
    for cell, amp in ((160, 0.35), (48, 0.22), (12, 0.12), (3, 0.06)):
        img += amp * (_value_noise(rng, h, w, cell) - 0.5)
    for _ in range(60):  # hard-edged "objects": discs and boxes with their own shading
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(15, 120)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) if rng.random() < 0.5 else \
            ((abs(xx - cx) < r) & (abs(yy - cy) < rng.uniform(0.3, 1.0) * r))
        shade = rng.random(3).astype(np.float32) * 0.8 + 0.1
        light = (1 - 0.4 * (yy - cy + r) / (2 * r))[..., None]
        img = np.where(mask[..., None], 0.5 * img + 0.5 * shade * light, img)
    img += rng.normal(0, 0.025, img.shape).astype(np.float32)  # sensor grain
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _glyphs(rng: np.random.Generator, count: int = 96, gw: int = 7, gh: int = 14,
            ss: int = 4) -> np.ndarray:
    """Anti-aliased pseudo-glyphs (count, gh, gw) of coverage in [0, 1]: stems, bars,
    bowls, diagonals and dots between x-height/ascender and baseline/descender."""
    ys, xs = np.mgrid[0:gh * ss, 0:gw * ss]
    u, v = (xs + 0.5) / ss, (ys + 0.5) / ss

    def seg(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((u - x0) * dx + (v - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        return np.hypot(u - x0 - t * dx, v - y0 - t * dy) < 0.6

    out = []
    for _ in range(count):
        top = 1.5 if rng.random() < 0.35 else 4.5
        bottom = 13.5 if rng.random() < 0.12 else 11.0
        ink = np.zeros(u.shape, bool)
        for _ in range(rng.integers(2, 5)):
            kind = rng.integers(0, 5)
            if kind == 0:
                x = float(rng.choice([1.2, 3.5, 5.8]))
                ink |= seg(x, top, x, bottom)
            elif kind == 1:
                y = float(rng.choice([4.5, 7.75, 11.0]))
                ink |= seg(0.8, y, 6.2, y)
            elif kind == 2:
                cx, cy, rx, ry = 3.5, 7.75, rng.uniform(2.0, 2.8), 3.2
                ink |= np.abs(np.hypot((u - cx) / rx, (v - cy) / ry) - 1) * min(rx, ry) < 0.6
            elif kind == 3:
                ink |= seg(0.8, top, 6.2, bottom) if rng.random() < 0.5 else seg(0.8, bottom, 6.2, top)
            else:
                ink |= np.hypot(u - 3.5, v - 2.5) < 0.9
        out.append(ink.reshape(gh, ss, gw, ss).mean(axis=(1, 3)))
    return np.stack(out)


def text_lines(n: int, w: int, seed: int = 7) -> np.ndarray:
    """n lines (n*LINE_H, w, 3) uint8 of dark anti-aliased pseudo-text on white, with
    words, ragged paragraph ends and a few blank or indented lines."""
    rng = np.random.default_rng(seed)
    glyphs = _glyphs(rng)
    gh, gw = glyphs.shape[1:]
    cov = np.zeros((n * LINE_H, w), np.float32)
    for i in range(n):
        r = rng.random()
        if r < 0.06:
            continue
        limit = int(rng.integers(300, w - 40)) if r < 0.2 else w - 40
        x = 40 + (32 if rng.random() < 0.15 else 0)
        y = i * LINE_H + 5
        while True:
            word = int(rng.integers(1, 11))
            if x + word * (gw + 1) > limit:
                break
            for _ in range(word):
                cov[y:y + gh, x:x + gw] = glyphs[rng.integers(len(glyphs))]
                x += gw + 1
            x += gw + 1
    ink = np.array([30, 30, 30], np.float32)
    return (255 - cov[..., None] * (255 - ink)).astype(np.uint8)


class Stimulus:
    """Draws the scenarios on the session's X display."""

    COLORS = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255),
              (255, 0, 0), (255, 0, 255), (255, 255, 0), (255, 255, 255)]
    CODES = 64

    def __init__(self, socket_path: Path) -> None:
        self.link_dir = Path("/tmp/.X11-unix")
        number = 90
        while (self.link_dir / f"X{number}").exists():
            number += 1
        self.link = self.link_dir / f"X{number}"
        self.link.symlink_to(socket_path)
        self.d = xdisplay.Display(f":{number}")
        screen = self.d.screen()
        self.screen = screen
        self.cmap = screen.default_colormap
        self.win = screen.root.create_window(0, 0, W, H, 0, screen.root_depth,
                                             override_redirect=True,
                                             background_pixel=screen.white_pixel)
        self.win.map()
        self.gc = self.win.create_gc(graphics_exposures=False)
        self.pixels: dict[tuple[int, int, int], int] = {}
        self.step = 0
        self.cursor = (60, 60)
        self.line = 0
        self.pan = [0, 0]
        self.pan_dir = [PAN_DX, PAN_DY]
        self.text = self.upload(text_lines(TEXT_LINES, W))
        self.photo = self.upload(photo_texture(TEX_H, TEX_W))
        self.paint_text_background()
        self.d.sync()

    def upload(self, rgb: np.ndarray) -> Any:
        """Puts an RGB image into a new server-side pixmap (in request-sized strips)."""
        h, w = rgb.shape[:2]
        depth = self.screen.root_depth
        visual = next(v for d in self.screen.allowed_depths for v in d.visuals
                      if v.visual_id == self.screen.root_visual)
        bpp = next(f.bits_per_pixel for f in self.d.display.info.pixmap_formats
                   if f.depth == depth)
        if depth != 24 or bpp != 32:
            raise RuntimeError(f"unsupported X visual: depth {depth}, {bpp} bits per pixel")
        value = np.zeros((h, w), np.uint32)
        for ch, mask in enumerate((visual.red_mask, visual.green_mask, visual.blue_mask)):
            value |= rgb[..., ch].astype(np.uint32) << ((mask & -mask).bit_length() - 1)
        order = "<u4" if self.d.display.info.image_byte_order == 0 else ">u4"
        data = value.astype(order)
        pixmap = self.win.create_pixmap(w, h, depth)
        rows = max(1, (self.d.display.info.max_request_length * 4 - 64) // (w * 4))
        for y in range(0, h, rows):
            chunk = data[y:y + rows]
            pixmap.put_image(self.gc, 0, y, w, chunk.shape[0], X.ZPixmap, depth, 0,
                             chunk.tobytes())
        return pixmap

    def pixel(self, rgb: tuple[int, int, int]) -> int:
        if rgb not in self.pixels:
            self.pixels[rgb] = self.cmap.alloc_color(rgb[0] * 257, rgb[1] * 257, rgb[2] * 257).pixel
        return self.pixels[rgb]

    def fill(self, rgb: tuple[int, int, int], x: int, y: int, w: int, h: int) -> None:
        self.gc.change(foreground=self.pixel(rgb))
        self.win.fill_rectangle(self.gc, x, y, w, h)

    def text_line(self, y: int) -> None:
        self.win.copy_area(self.gc, self.text, 0, (self.line % TEXT_LINES) * LINE_H, W, LINE_H, 0, y)
        self.line += 1

    def paint_text_background(self) -> None:
        """A page of text (markers excepted); also resets the typing cursor."""
        self.fill((255, 255, 255), 0, 32, W, H - 32)
        self.fill((255, 255, 255), 64, 0, W - 64, 32)
        for y in range(40, H - LINE_H + 1, LINE_H):
            self.text_line(y)
        self.cursor = (60, 60)
        self.d.sync()

    def marker(self) -> int:
        self.step += 1
        code = self.step % self.CODES
        self.fill(self.COLORS[code & 7], 0, 0, 32, 32)
        self.fill(self.COLORS[code >> 3], 32, 0, 32, 32)
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
            self.win.copy_area(self.gc, self.win, 0, 40 + LINE_H, W, H - 40 - LINE_H, 0, 40)
            self.text_line(H - LINE_H)
        else:
            for i, limit in ((0, TEX_W - VIEW_W), (1, TEX_H - VIEW_H)):
                nxt = self.pan[i] + self.pan_dir[i]
                if not 0 <= nxt <= limit:
                    self.pan_dir[i] = -self.pan_dir[i]
                    nxt = self.pan[i] + self.pan_dir[i]
                self.pan[i] = nxt
            self.win.copy_area(self.gc, self.photo, self.pan[0], self.pan[1], VIEW_W, VIEW_H,
                               VIEW_X, VIEW_Y)
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
    stim.paint_text_background()  # same start screen for every transport
    await asyncio.sleep(1.5)  # let the full-screen repaint reach the page first
    if scenario != "typing":
        return await run_continuous(page, stim, scenario, samples, profile)
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


TAKE_SEEN_JS = """() => {
    const s = window.__lat.seen;
    window.__lat.seen = s.filter((e) => e[2].frame === null);
    return s.filter((e) => e[2].frame !== null);
}"""


def pct(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else None


async def run_continuous(page: Page, stim: Stimulus, scenario: str, samples: int,
                         profile: str) -> dict[str, Any]:
    """Draws ``max(60, 4 * samples)`` steps at STEP_HZ while the page is polled; matches
    every step shown (its marker code) to the latest step drawn with that code."""
    period = 1 / STEP_HZ
    for _ in range(STEP_HZ // 2):  # warm-up: the transports settle on the motion
        stim.draw(scenario)
        await asyncio.sleep(period)
    await asyncio.sleep(0.5)
    await page.evaluate("window.__lat.seen = []")
    steps = max(60, samples * 4)
    drawn: list[tuple[int, float]] = []
    seen: list[list[Any]] = []

    async def drawer() -> None:
        start = time.monotonic()
        for i in range(steps):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            drawn.append(stim.draw(scenario))

    cpu0, bytes0, t0 = chromium_cpu_seconds(profile), await page_bytes(page), time.monotonic()
    rtc0 = await page.evaluate(RTC_STATS_JS)
    task = asyncio.create_task(drawer())
    while not task.done():
        await asyncio.sleep(0.1)
        seen += await page.evaluate(TAKE_SEEN_JS)
    await task
    elapsed = time.monotonic() - t0
    cpu = (chromium_cpu_seconds(profile) - cpu0) / elapsed * 100
    rate = (await page_bytes(page) - bytes0) / elapsed
    rtc = rtc_breakdown(rtc0, await page.evaluate(RTC_STATS_JS))
    last_code = drawn[-1][0]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(e[0] == last_code and e[1] >= drawn[-1][1]
                                                  for e in seen):
        await asyncio.sleep(0.05)
        seen += await page.evaluate(TAKE_SEEN_JS)

    shown: dict[int, tuple[float, dict[str, Any]]] = {}  # step index -> (detected, meta)
    for code, t_det, meta in sorted(seen, key=lambda e: e[1]):
        idx = next((i for i in range(len(drawn) - 1, -1, -1)
                    if drawn[i][0] == code and drawn[i][1] <= t_det), None)
        if idx is not None and idx not in shown:
            shown[idx] = (t_det, meta)
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
        "step_hz": STEP_HZ,
        "p50_ms": p50(latencies), "p95_ms": pct(latencies, 0.95),
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        "any_change_p50_ms": p50(any_change), "any_change_p95_ms": pct(any_change, 0.95),
        "chromium_cpu_pct": cpu, "bytes_per_s": rate, "latencies_ms": latencies,
        "received_p50_ms": p50(to_receive), "presented_p50_ms": p50(to_present),
        "frame_p50_ms": p50(to_frame), "frame_p95_ms": pct(to_frame, 0.95),
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
                            if "steps_drawn" in r:
                                extra = (f"  shown {r['steps_shown']}/{r['steps_drawn']} steps,"
                                         f" any-change p50 {r['any_change_p50_ms'] or 0:.1f}"
                                         f" p95 {r['any_change_p95_ms'] or 0:.1f} ms" + extra)
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
    print(f"workloads ({W}x{H}; n = keystrokes (typing) or steps (scroll, motion) whose "
          "marker was seen; steps coalesced away: JSON steps_dropped):")
    for name, note in WORKLOADS.items():
        print(f"  {name:7s} {note}")
    print(f"  markers: {MARKER_NOTE}")
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
                               "workloads": WORKLOADS, "markers": MARKER_NOTE,
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
