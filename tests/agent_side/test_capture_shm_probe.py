"""The XShm probe of ScreenCapture.open on a real Xvfb.

A server that answers XShmGetImage without writing into the segment passed
to it (it mapped a copy) would give a black picture and no error; the probe
finds that and the capture uses XGetImage, with a warning in the log. The
"server that does not write" is made here by turning the probe's and mss's
XShmGetImage requests into no-ops (the one fake: a real such server is not
at hand); everything else is the real Xvfb.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from Xlib import display as xdisplay

from agent_side.capture import ScreenCapture


def paint(name: str, rgb: int) -> None:
    disp = xdisplay.Display(name)
    root = disp.screen().root
    gc = root.create_gc(foreground=rgb)
    root.fill_rectangle(gc, 0, 0, 4000, 4000)
    gc.free()
    disp.sync()
    disp.close()


def test_probe_keeps_xshm_on_a_local_server(xvfb) -> None:  # type: ignore[no-untyped-def]
    paint(xvfb.name, 0x3366CC)
    cap = ScreenCapture(xvfb.name, xvfb.width, xvfb.height)
    cap.open()
    try:
        assert cap.backend == "xshm"
        assert tuple(cap.snapshot()[5, 5, :3]) == (0xCC, 0x66, 0x33)  # BGRA
    finally:
        cap.close()


def test_probe_falls_back_when_server_writes_do_not_arrive(
        xvfb, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from mss.linux import xcb

    def no_write(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(xcb, "shm_get_image", no_write)
    paint(xvfb.name, 0x3366CC)
    cap = ScreenCapture(xvfb.name, xvfb.width, xvfb.height)
    with caplog.at_level(logging.WARNING, logger="agent_side.capture"):
        cap.open()
    try:
        assert cap.backend == "xgetimage"
        assert any("using XGetImage" in r.getMessage() for r in caplog.records), caplog.text
        pixels = cap.snapshot()
        assert tuple(pixels[5, 5, :3]) == (0xCC, 0x66, 0x33), pixels[5, 5]
        paint(xvfb.name, 0x00FF00)
        cap.grab()
        assert np.all(cap.pixels[:, :, 1] == 0xFF) and np.all(cap.pixels[:, :, 0] == 0)
    finally:
        cap.close()
