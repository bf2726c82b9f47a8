"""What the latency benchmarks draw on the session's screen: text and photo-like
workloads, each step tagged with a marker the viewer side decodes.

:class:`Stimulus` draws on the session's X display (typing into a text area,
scrolling glyph lines, panning a texture) at :data:`STEP_HZ` steps a second, with
two 32x32 marker blocks encoding the step, and remembers when each step was drawn.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from Xlib import X
from Xlib import display as xdisplay

from benchmarks.harness import authorize_display  # noqa: E402

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
