"""ScreenCapture on a real Xvfb: size, XShm backend, XDAMAGE, diff fallback."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
from Xlib import display as xdisplay

from agent_side.capture import Rect, ScreenCapture, bounding_box


class Painter:
    """Fills rectangles on the root window of a display (python-xlib)."""

    def __init__(self, name: str) -> None:
        self.display = xdisplay.Display(name)
        self.root = self.display.screen().root

    def fill(self, x: int, y: int, w: int, h: int, rgb: int) -> None:
        gc = self.root.create_gc(foreground=rgb)
        self.root.fill_rectangle(gc, x, y, w, h)
        gc.free()
        self.display.sync()

    def close(self) -> None:
        self.display.close()


@pytest.fixture
def painter(xvfb) -> Iterator[Painter]:  # type: ignore[no-untyped-def]
    p = Painter(xvfb.name)
    yield p
    p.close()


@pytest.fixture
def capture(xvfb) -> Iterator[ScreenCapture]:  # type: ignore[no-untyped-def]
    cap = ScreenCapture(xvfb.name, xvfb.width, xvfb.height)
    cap.open()
    yield cap
    cap.close()


def wait_for_damage(cap: ScreenCapture, deadline_s: float = 3.0) -> list[Rect]:
    r, w = os.pipe()
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            rects = cap.poll_damage()
            if rects:
                return rects
            cap.wait_damage(0.05, r)
        return []
    finally:
        os.close(r)
        os.close(w)


def test_grab_size_and_xshm(capture: ScreenCapture, xvfb) -> None:  # type: ignore[no-untyped-def]
    rect = capture.grab()
    assert rect == Rect(0, 0, xvfb.width, xvfb.height)
    assert capture.pixels.shape == (xvfb.height, xvfb.width, 4)
    assert capture.frame.width == xvfb.width and capture.frame.height == xvfb.height
    assert capture.backend == "xshm"
    assert capture.damage == "xdamage"


def test_damage_reports_drawn_rectangle(capture: ScreenCapture, painter: Painter) -> None:
    wait_for_damage(capture, 0.3)  # initial whole-screen damage, if any
    painter.fill(100, 200, 40, 30, 0xFF0000)
    rects = wait_for_damage(capture)
    box = bounding_box(rects)
    assert box is not None
    assert box.x <= 100 and box.y <= 200
    assert box.x + box.width >= 140 and box.y + box.height >= 230
    got = capture.grab(box)
    assert got.x % 2 == 0 and got.y % 2 == 0
    assert tuple(capture.pixels[210, 110]) == (0, 0, 255, 0) or tuple(
        capture.pixels[210, 110][:3]) == (0, 0, 255)


def test_partial_grab_touches_only_rect(capture: ScreenCapture, painter: Painter) -> None:
    capture.grab()
    painter.fill(0, 0, 1600, 900, 0x00FF00)
    capture.grab(Rect(10, 10, 20, 20))
    assert tuple(capture.pixels[15, 15][:3]) == (0, 255, 0)
    assert tuple(capture.pixels[500, 500][:3]) != (0, 255, 0)


def test_diff_fallback(xvfb, painter: Painter) -> None:  # type: ignore[no-untyped-def]
    cap = ScreenCapture(xvfb.name, xvfb.width, xvfb.height, use_damage=False)
    cap.open()
    try:
        assert cap.damage == "diff"
        assert cap.fileno() is None
        assert cap.diff_grab() == []
        painter.fill(300, 400, 10, 10, 0x0000FF)
        rects = cap.diff_grab()
        assert rects and rects[0].y <= 400 and rects[0].y + rects[0].height >= 410
        assert tuple(cap.pixels[405, 305][:3]) == (255, 0, 0)
        assert cap.diff_grab() == []
    finally:
        cap.close()
        cap.close()  # idempotent


def test_grab_reuses_buffer(capture: ScreenCapture) -> None:
    before = capture.pixels.__array_interface__["data"][0]
    for _ in range(3):
        capture.grab()
    assert capture.pixels.__array_interface__["data"][0] == before
    assert np.shares_memory(capture.pixels, np.frombuffer(memoryview(capture.frame.planes[0]),
                                                          dtype=np.uint8))
