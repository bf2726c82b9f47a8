"""The viewer-page side of the latency benchmarks: scripts injected into the real
viewer page (and noVNC) in headless Chromium, and what is read back from it.

The detector decodes the marker blocks of every picture the page shows and stamps
when it showed it; :class:`Probe` collects those stamps, :func:`picture_quality`
compares received pictures with the drawn source (PSNR), and :func:`rtc_breakdown`
splits WebRTC's own delays from the page's.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Page

from benchmarks.harness import chromium_cpu_seconds, tree_cpu_seconds

GRAB_AREA = {"typing": (40, 40, 640, 360), "scroll": (400, 300, 640, 360),
             "motion": (400, 250, 640, 360)}
"""x, y, w, h of the picture compared with the source (PSNR) per workload."""
GRAB_CODES = {"typing": frozenset(range(2, 64, 4)), "scroll": frozenset(range(4, 64, 8)),
              "motion": frozenset(range(4, 64, 8))}
"""Marker codes whose received picture is copied back (every 4th keystroke, 8th step)."""


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




TAKE_SEEN_JS = """() => {
    const s = window.__lat.seen;
    window.__lat.seen = s.filter((e) => e[2].frame === null);
    return s.filter((e) => e[2].frame !== null);
}"""
