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
import base64
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
from Xlib import X
from Xlib import display as xdisplay

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import authorize_display, find_agent_pid  # noqa: E402
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
X11VNC_COMMON = ("-shared", "-forever", "-ncache", "0", "-nopw", "-norc", "-noipv6",
                 "-nolookup", "-noremote", "-nocmds", "-quiet", "-noshm", "-rfbport", "0")
"""x11vnc as the session's own fallback runs it, minus the tuning (``-noshm``: the
sandboxed Xvfb refuses a foreign uid's shared memory, see ``agent_side/vnc.py``)."""
X11VNC_TUNING = ("-defer", "5", "-wait", "5", "-nowait_bog")
GRAB_AREA = {"typing": (40, 40, 640, 360), "scroll": (400, 300, 640, 360),
             "motion": (400, 250, 640, 360)}
"""x, y, w, h of the picture compared with the source (PSNR) per workload."""
GRAB_CODES = {"typing": frozenset(range(2, 64, 4)), "scroll": frozenset(range(4, 64, 8)),
              "motion": frozenset(range(4, 64, 8))}
"""Marker codes whose received picture is copied back (every 4th keystroke, 8th step)."""
SCENARIOS = ("typing", "scroll", "motion")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

DETECTOR_JS = r"""
() => {
  // grab: marker codes whose picture (area = [x, y, w, h]) is copied for the PSNR
  const state = { seen: [], last: -1, bytes: 0, grab: new Set(), grabs: [], area: [0, 0, 1, 1] };
  window.__lat = state;
  const bits = (px, o) => ((px[o] > 128) << 2) | ((px[o + 1] > 128) << 1) | (px[o + 2] > 128);
  // low 3 bits: block at (0,0); high 3 bits: block at (32,0); px holds both centres
  const code = (px, o2) => bits(px, 0) | (bits(px, o2) << 3);
  const clock = () => performance.timeOrigin + performance.now();
  // meta.frame: the rendering update that shows the change. rVFC callbacks run in
  // it (their entry time); a canvas drawn by ws/noVNC is shown by the next one, so
  // it is stamped in the next requestAnimationFrame callback.
  const note = (px, meta, o2 = 128, grab = null) => {
    const c = code(px, o2);
    if (c !== state.last) {
      state.last = c;
      const entry = [c, clock(), meta || { frame: null }];
      state.seen.push(entry);
      if (grab && state.grab.has(c) && state.grabs.length < 24) {
        state.grabs.push([c, entry[1], grab(...state.area)]);
      }
      if (entry[2].frame === null) requestAnimationFrame(() => { entry[2].frame = clock(); });
    }
  };
  const t = vrViewer.transport;
  if (t.name === 'ws') {
    const ctx = t.ctx, orig = t.draw.bind(t);
    t.draw = (frame) => { orig(frame); note(ctx.getImageData(16, 16, 33, 1).data, null, 128,
      (x, y, w, h) => ctx.getImageData(x, y, w, h).data); };
  } else if (t.name === 'webrtc') {
    const c = document.createElement('canvas'); c.width = 2; c.height = 1;
    const cx = c.getContext('2d', { willReadFrequently: true });
    const v = t.element;
    const g = document.createElement('canvas');
    const gx = g.getContext('2d', { willReadFrequently: true });
    const grab = (x, y, w, h) => {
      g.width = w; g.height = h;
      gx.drawImage(v, x, y, w, h, 0, 0, w, h);
      return gx.getImageData(0, 0, w, h).data;
    };
    // rVFC metadata (epoch ms): when the frame arrived and was handed to the compositor.
    const epoch = (t) => (t === undefined ? null : performance.timeOrigin + t);
    const cb = (now, m) => {
      const entered = clock();
      cx.drawImage(v, 8, 8, 16, 16, 0, 0, 1, 1);
      cx.drawImage(v, 40, 8, 16, 16, 1, 0, 1, 1);
      note(cx.getImageData(0, 0, 2, 1).data, { frame: entered,
           received: epoch(m.receiveTime), presented: epoch(m.presentationTime) }, 4, grab);
      v.requestVideoFrameCallback(cb);
    };
    v.requestVideoFrameCallback(cb);
  } else {
    const d = t.rfb._display, canvas = t.canvas;
    const ctx = canvas.getContext('2d');
    const orig = d.flip.bind(d);
    d.flip = (fromQueue) => { orig(fromQueue); note(ctx.getImageData(16, 16, 33, 1).data, null, 128,
      (x, y, w, h) => ctx.getImageData(x, y, w, h).data); };
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
    // the x11vnc + noVNC baselines: the same page and noVNC, another RFB server
    if (window.__vncUrl && String(args[0]).includes('/vnc/websockify')) args[0] = window.__vncUrl;
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
               "steps coalesced by the transport count as dropped (JSON); a code mapping to a "
               "step older than one already shown is a torn marker (blocks from two steps) and "
               "is dropped (JSON torn_markers); any_change = time until that step or a newer "
               "one is on screen")


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

    def __init__(self, socket_path: Path, width: int = 1600, height: int = 900) -> None:
        self.w, self.h = width, height
        W, H = width, height
        self.link_dir = Path("/tmp/.X11-unix")
        number = 90
        while (self.link_dir / f"X{number}").exists():
            number += 1
        self.link = self.link_dir / f"X{number}"
        self.link.symlink_to(socket_path)
        authorize_display(number, socket_path)
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
        self.win.copy_area(self.gc, self.text, 0, (self.line % TEXT_LINES) * LINE_H, self.w, LINE_H, 0, y)
        self.line += 1

    def paint_text_background(self) -> None:
        """A page of text (markers excepted); also resets the typing cursor."""
        self.fill((255, 255, 255), 0, 32, self.w, self.h - 32)
        self.fill((255, 255, 255), 64, 0, self.w - 64, 32)
        for y in range(40, self.h - LINE_H + 1, LINE_H):
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
        # One step is atomic for the other X clients: without the grab, the runtime agent's
        # (or x11vnc's) capture can land between the scroll and the marker (a torn step).
        self.d.grab_server()
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
            self.win.copy_area(self.gc, self.win, 0, 40 + LINE_H, self.w, self.h - 40 - LINE_H, 0, 40)
            self.text_line(self.h - LINE_H)
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
        self.d.ungrab_server()
        self.d.sync()
        return code, time.time() * 1000

    def snapshot(self, area: tuple[int, int, int, int]) -> np.ndarray:
        """The window's *area* as RGB (h, w, 3) uint8, read back from the X server."""
        x, y, w, h = area
        image = self.win.get_image(x, y, w, h, X.ZPixmap, 0xFFFFFFFF)
        bgrx = np.frombuffer(image.data, dtype=np.uint8).reshape(h, w, 4)
        return bgrx[..., 2::-1].copy()

    @property
    def display_name(self) -> str:
        return ":" + self.link.name[1:]

    def close(self) -> None:
        try:
            self.win.destroy()
            self.d.close()
        except Exception as e:  # the session may already be gone
            print(f"closing the X connection: {e}", file=sys.stderr)
        finally:
            self.link.unlink(missing_ok=True)


def chromium_cpu_seconds(profile_marker: str) -> float:
    """CPU seconds of OUR Chromium (browser + children): the browser processes whose
    command line holds *profile_marker* among this program's descendants (other people's
    Playwright browsers on the same machine use the same profile prefix)."""
    return tree_cpu_seconds(profile_marker=profile_marker, under=os.getpid())


def tree_cpu_seconds(pids: tuple[int, ...] = (), profile_marker: str | None = None,
                     under: int | None = None) -> float:
    """CPU seconds of *pids* (or, below the process *under*, the processes whose command
    line holds *profile_marker*, children excepted) and all their descendants.

    Each process counts its own time plus that of its reaped children (cutime/cstime),
    so a renderer that exits during the window does not take its CPU with it."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    marked: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes() if profile_marker else b""
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
        if profile_marker and profile_marker.encode() in cmdline and b"--type=" not in cmdline:
            marked.add(int(entry.name))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)

    def descendants(root: int) -> set[int]:
        out, frontier = set(), [root]
        while frontier:
            pid = frontier.pop()
            if pid not in out:
                out.add(pid)
                frontier.extend(children.get(pid, ()))
        return out

    roots = set(pids)
    if profile_marker:
        roots |= marked & descendants(under) if under is not None else marked
    counted: set[int] = set()
    for root in roots:
        if root in stats:
            counted |= descendants(root)
    return sum(stats[pid][1] for pid in counted if pid in stats)


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


class Probe:
    """What a scenario samples besides latency: Chromium and server CPU, page bytes."""

    def __init__(self, page: Page, profile: str, server_pids: tuple[int, ...]) -> None:
        self.page, self.profile, self.server_pids = page, profile, server_pids

    async def start(self) -> None:
        self.cpu0 = chromium_cpu_seconds(self.profile)
        self.server0 = tree_cpu_seconds(self.server_pids) if self.server_pids else 0.0
        self.bytes0 = await page_bytes(self.page)
        self.rtc0 = await self.page.evaluate(RTC_STATS_JS)
        self.t0 = time.monotonic()

    async def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        server = tree_cpu_seconds(self.server_pids) if self.server_pids else None
        return {
            "chromium_cpu_pct": (chromium_cpu_seconds(self.profile) - self.cpu0) / elapsed * 100,
            "server_cpu_pct": (server - self.server0) / elapsed * 100 if server is not None else None,
            "bytes_per_s": (await page_bytes(self.page) - self.bytes0) / elapsed,
            "receive_path": rtc_breakdown(self.rtc0, await self.page.evaluate(RTC_STATS_JS)),
        }


GRABS_JS = """() => {
    const out = window.__lat.grabs.map(([c, t, px]) => {
        let s = '';
        for (let i = 0; i < px.length; i += 0x8000) {
            s += String.fromCharCode.apply(null, px.subarray(i, i + 0x8000));
        }
        return [c, t, btoa(s)];
    });
    window.__lat.grabs = [];
    return out;
}"""


def psnr(received: np.ndarray, source: np.ndarray) -> float:
    mse = float(np.mean((received.astype(np.float32) - source.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


async def picture_quality(page: Page, drawn: list[tuple[int, float]],
                          sources: dict[int, np.ndarray],
                          area: tuple[int, int, int, int]) -> list[float]:
    """PSNR (RGB) of every picture the page copied back against the source of its step."""
    out = []
    _, _, w, h = area
    for code, t_det, b64 in await page.evaluate(GRABS_JS):
        idx = next((i for i in range(len(drawn) - 1, -1, -1)
                    if drawn[i][0] == code and drawn[i][1] <= t_det), None)
        if idx is None or idx not in sources:
            continue
        rgba = np.frombuffer(base64.b64decode(b64), np.uint8)
        if rgba.size != w * h * 4:
            continue
        out.append(psnr(rgba.reshape(h, w, 4)[..., :3], sources[idx]))
        if os.environ.get("VR_BENCH_DUMP"):  # debugging aid: received | source, as PPM
            both = np.concatenate([rgba.reshape(h, w, 4)[..., :3], sources[idx]], axis=1)
            path = Path(os.environ["VR_BENCH_DUMP"]) / f"grab-{time.time():.3f}-{out[-1]:.1f}.ppm"
            path.write_bytes(f"P6 {2 * w} {h} 255\n".encode() + both.tobytes())
    return out


async def arm_grabs(page: Page, scenario: str) -> None:
    await page.evaluate("([codes, area]) => { window.__lat.grab = new Set(codes); "
                        "window.__lat.area = area; window.__lat.grabs = []; }",
                        [sorted(GRAB_CODES[scenario]), list(GRAB_AREA[scenario])])


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


TAKE_SEEN_JS = """() => {
    const s = window.__lat.seen;
    window.__lat.seen = s.filter((e) => e[2].frame === null);
    return s.filter((e) => e[2].frame !== null);
}"""


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


# -- the x11vnc + noVNC baselines --------------------------------------------------


class VncBaseline:
    """An x11vnc on the session's display (tuned or default settings) and a one-hop
    WebSocket bridge to it on 127.0.0.1, as websockify would serve noVNC."""

    def __init__(self, display: str, workdir: Path) -> None:
        self.display, self.workdir = display, workdir
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/rfb/{mode}", self._bridge)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def url(self, mode: str) -> str:
        return f"ws://127.0.0.1:{self.port}/rfb/{mode}"

    async def x11vnc(self, mode: str) -> int:
        """Starts (once) the x11vnc of *mode* (``tuned`` or ``default``); returns its pid."""
        if mode in self.procs:
            return self.procs[mode].pid
        sock = self.workdir / f"x11vnc-{mode}.sock"
        args = [*X11VNC_COMMON, *(X11VNC_TUNING if mode == "tuned" else ())]
        proc = await asyncio.create_subprocess_exec(
            "x11vnc", "-display", self.display, "-unixsock", str(sock), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        self.procs[mode] = proc
        deadline = time.monotonic() + 15
        while not sock.exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"x11vnc ({mode}) did not start on {self.display}")
            await asyncio.sleep(0.05)
        return proc.pid

    async def _bridge(self, request: web.Request) -> web.WebSocketResponse:
        mode = request.match_info["mode"]
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=0)
        await ws.prepare(request)
        reader, writer = await asyncio.open_unix_connection(
            str(self.workdir / f"x11vnc-{mode}.sock"))

        async def upstream() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    writer.write(msg.data)
                    await writer.drain()

        async def downstream() -> None:
            while data := await reader.read(1 << 16):
                await ws.send_bytes(data)

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            await ws.close()
        return ws

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        self.procs.clear()


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
