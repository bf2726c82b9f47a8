"""ScreenCapture.grab_changed on a real Xvfb: damage without new pixels costs no frame."""

from __future__ import annotations

from Xlib import display as xdisplay

from agent_side.capture import Rect, ScreenCapture


def test_grab_changed_reports_only_new_pixels(xvfb) -> None:  # type: ignore[no-untyped-def]
    capture = ScreenCapture(xvfb.name, xvfb.width, xvfb.height)
    capture.open()
    painter = xdisplay.Display(xvfb.name)
    root = painter.screen().root
    try:
        area = Rect(100, 100, 64, 32)
        assert capture.grab_changed(area) is None  # nothing drawn since open()
        gc = root.create_gc(foreground=0x3366CC)
        root.fill_rectangle(gc, 100, 100, 64, 32)
        painter.sync()
        assert capture.grab_changed(area) == area
        assert tuple(capture.pixels[110, 110, :3]) == (0xCC, 0x66, 0x33)  # BGRA
        root.fill_rectangle(gc, 100, 100, 64, 32)  # the same pixels drawn again
        painter.sync()
        assert capture.grab_changed(area) is None
        gc.free()
    finally:
        painter.close()
        capture.close()
