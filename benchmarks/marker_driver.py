"""The glass-to-glass stimulus: numbered steps drawn on the session display, and their
detection in decoded frames.

:class:`Driver` draws each step on the session's X server (a grey marker block whose
level encodes the step, plus typing, scrolling or motion around it) and records when
it drew it; :class:`Detector` matches each decoded frame to the step it shows and keeps
the latencies and the picture quality (PSNR against the drawn source).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from Xlib import XK, X
from Xlib import display as xdisplay
from Xlib.ext import xtest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


WIDTH, HEIGHT = 1600, 900
"""The default session size."""
MARKER = (8, 8, 96, 48)  # x, y, w, h of the step marker block
LEVELS = 8
QUALITY_ROI = (200, 200, 640, 360)
"""x, y, w, h of the area compared with the source (PSNR) in scroll and motion."""
QUALITY_EVERY = 10
"""Every this many steps the driver keeps the source pixels of QUALITY_ROI."""


def grey_y(level: int) -> float:
    """Luma (BT.601 limited range) of grey RGB value *level*."""
    return 16 + 219 * level / 255


def step_grey(step: int) -> int:
    return 40 + (step % LEVELS) * 28


class Driver:
    """Changes the session's screen from a thread; records t0 per step."""

    def __init__(self, display_name: str, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.disp = xdisplay.Display(display_name)
        self.screen = self.disp.screen()
        self.root = self.screen.root
        self.width, self.height = width, height
        self.window: Any = None
        self.gcs: list[Any] = []
        self.t0: dict[int, float] = {}
        self.sources: dict[int, np.ndarray] = {}
        """Source luma of QUALITY_ROI for every QUALITY_EVERY-th step (scroll, motion)."""

    def snapshot_luma(self) -> np.ndarray:
        """The window's QUALITY_ROI as BT.601 limited-range luma (what the encoder targets)."""
        x, y, w, h = QUALITY_ROI
        image = self.window.get_image(x, y, w, h, X.ZPixmap, 0xFFFFFFFF)
        bgrx = np.frombuffer(image.data, dtype=np.uint8).reshape(h, w, 4).astype(np.float32)
        return 16 + (65.481 * bgrx[..., 2] + 128.553 * bgrx[..., 1] + 24.966 * bgrx[..., 0]) / 255

    def make_gc(self, rgb: int) -> Any:
        return (self.window or self.root).create_gc(foreground=rgb, background=0)

    def open_window(self) -> None:
        self.window = self.root.create_window(
            0, 0, self.width, self.height, 0, self.screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=0x101010, override_redirect=True, event_mask=X.ExposureMask)
        self.window.map()
        self.disp.sync()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.disp.pending_events() and self.disp.next_event().type == X.Expose:
                break
            time.sleep(0.01)
        self.gcs = [self.make_gc(c) for c in (0x1F77B4, 0xFF7F0E, 0x2CA02C, 0xD62728,
                                             0x9467BD, 0x8C564B, 0xE377C2, 0x7F7F7F)]
        self.text_gc = self.make_gc(0xE0E0E0)
        self.bg_gc = self.make_gc(0x101010)
        self.grey_gcs = [self.make_gc(step_grey(i) * 0x010101) for i in range(LEVELS)]

    def close_window(self) -> None:
        if self.window is not None:
            self.window.destroy()
            self.disp.sync()
            self.window = None

    def marker(self, step: int) -> None:
        x, y, w, h = MARKER
        self.window.fill_rectangle(self.grey_gcs[step % LEVELS], x, y, w, h)

    def scroll_step(self, step: int) -> None:
        line = 18
        top = MARKER[1] + MARKER[3] + 8
        self.window.copy_area(self.bg_gc, self.window, 0, top + line, 0, top, self.width,
                              self.height - top - line)
        self.window.fill_rectangle(self.bg_gc, 0, self.height - line, self.width, line)
        text = f"{step:08d} " + " ".join(f"word{(step * 7 + i) % 97:02d}" for i in range(24))
        self.window.draw_text(self.text_gc, 8, self.height - 5, text.encode())
        self.marker(step)

    def motion_step(self, step: int) -> None:
        bar = 40
        offset = (step * 13) % bar
        for i in range(-1, self.width // bar + 1):
            self.window.fill_rectangle(self.gcs[(i + step) % len(self.gcs)], i * bar + offset,
                                       MARKER[1] + MARKER[3] + 8, bar, self.height)
        self.marker(step)

    def type_key(self, char: str) -> None:
        keycode = self.disp.keysym_to_keycode(XK.string_to_keysym(char))
        xtest.fake_input(self.disp, X.KeyPress, keycode)
        xtest.fake_input(self.disp, X.KeyRelease, keycode)

    def move_pointer(self, x: int, y: int) -> None:
        xtest.fake_input(self.disp, X.MotionNotify, x=x, y=y)
        self.disp.sync()

    def run(self, stop: threading.Event, kind: str, rate: float) -> None:
        step = 0
        next_at = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
                continue
            step += 1
            t0 = time.monotonic()
            self.disp.grab_server()  # the step is atomic for the agent's capture
            if kind == "scrolling":
                self.scroll_step(step)
            elif kind == "motion":
                self.motion_step(step)
            elif kind == "typing":
                self.type_key("abcdefghijklmnopqrstuvwxyz"[step % 26])
            self.disp.ungrab_server()
            self.disp.flush()
            self.t0[step] = t0
            if kind != "typing" and step % QUALITY_EVERY == 0:
                self.sources[step] = self.snapshot_luma()
            if kind == "typing":
                next_at = t0 + random.uniform(0.2, 0.3)
            else:
                next_at = max(next_at + 1 / rate, t0)

    def close(self) -> None:
        self.close_window()
        self.disp.close()


@dataclass
class Detector:
    """Matches decoded frames to driver steps."""

    kind: str
    driver: Driver
    roi: tuple[int, int, int, int] = (0, 0, WIDTH, HEIGHT)
    latencies: list[float] = field(default_factory=list)
    seen_steps: set[int] = field(default_factory=set)
    last_step_seen: int = 0
    reference: np.ndarray | None = None
    active: bool = False
    warmup_steps: int = 0
    """Steps up to this one are matched (to keep the bookkeeping) but not counted."""
    psnr_db: list[float] = field(default_factory=list)

    def __call__(self, at: float, y: np.ndarray) -> None:
        if not self.active:
            return
        if self.kind == "typing":
            self._typing(at, y)
        else:
            self._marker(at, y)

    def _marker(self, at: float, y: np.ndarray) -> None:
        x0, y0, w, h = MARKER
        block = y[y0 + 8:y0 + h - 8, x0 + 8:x0 + w - 8]
        mean = float(block.mean())
        level = min(range(LEVELS), key=lambda i: abs(grey_y(step_grey(i)) - mean))
        if abs(grey_y(step_grey(level)) - mean) > 8:
            return
        # the newest step with that level (mod LEVELS) that was already drawn
        t0s = self.driver.t0
        candidates = [s for s in list(t0s) if s % LEVELS == level and t0s[s] <= at
                      and s not in self.seen_steps and s > self.last_step_seen - LEVELS]
        if not candidates:
            return
        step = max(candidates)
        self.seen_steps.add(step)
        self.last_step_seen = max(self.last_step_seen, step)
        if step <= self.warmup_steps:
            return
        self.latencies.append((at - t0s[step]) * 1000)
        source = self.driver.sources.get(step)
        if source is not None:
            qx, qy, qw, qh = QUALITY_ROI
            got = y[qy:qy + qh, qx:qx + qw].astype(np.float32)
            mse = float(np.mean((got - source) ** 2))
            self.psnr_db.append(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse))

    def _typing(self, at: float, y: np.ndarray) -> None:
        x0, y0, w, h = self.roi
        roi = y[y0:y0 + h, x0:x0 + w].astype(np.int16)
        t0s = self.driver.t0
        if self.reference is None:
            self.reference = roi
            return
        changed = int(np.count_nonzero(np.abs(roi - self.reference) > 48))
        if changed < 8:
            return
        self.reference = roi
        pending = [s for s in list(t0s) if s not in self.seen_steps and t0s[s] <= at]
        if not pending:
            return
        # the newest key sent before this frame; older unmatched ones are misses
        # (keys come 200-300 ms apart, far more than the latency)
        step = max(pending)
        self.seen_steps.update(pending)
        if step > self.warmup_steps:
            self.latencies.append((at - t0s[step]) * 1000)


def stage_means(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    b, a = before["media"]["stage_totals"], after["media"]["stage_totals"]
    for name in ("grab", "convert", "encode_h264"):
        count = a[name]["count"] - b[name]["count"]
        out[name.replace("_h264", "") + "_ms"] = (
            (a[name]["ms"] - b[name]["ms"]) / count if count else None)
    return out
