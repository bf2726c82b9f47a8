"""The X screen's size, changed with RandR on a running Xvfb.

Xvfb allocates its framebuffer for the ``-screen`` size it was started with and
accepts RandR changes up to that size (measured: ``RRSetScreenSize`` beyond it is
``BadValue``; below it, the one CRTC must first be given a mode that fits, or it is
``BadMatch``). A pooled pod's Xvfb therefore starts at the pool's largest size and
is shrunk to the session's resolution when it is claimed (about 3 ms).

Blocking (Xlib): call from a worker thread.
"""

from __future__ import annotations

from Xlib import display as xdisplay
from Xlib.ext import randr

from .errors import AgentSideError

__all__ = ["ScreenError", "open_display", "resize_screen", "screen_size"]

DPI = 96
"""The Xvfb launchers' ``-dpi``: the physical size follows it, as at start-up."""


class ScreenError(AgentSideError):
    """The screen could not be resized (too large, or no RandR)."""


def screen_size(display: str) -> tuple[int, int]:
    """The current size of the root window."""
    d = xdisplay.Display(display)
    try:
        s = d.screen()
        return s.width_in_pixels, s.height_in_pixels
    finally:
        d.close()


def open_display(display: str) -> xdisplay.Display:
    """An X connection to keep for :func:`resize_screen` (opening one costs round trips)."""
    return xdisplay.Display(display)


def resize_screen(display: str, width: int, height: int,
                  conn: xdisplay.Display | None = None) -> None:
    """Make the screen *width* x *height* (at most the size Xvfb started with), on *conn*
    when given (it stays open) or on a connection of its own."""
    d = conn if conn is not None else xdisplay.Display(display)
    try:
        if not d.has_extension("RANDR"):
            raise ScreenError("the X server has no RandR extension")
        root = d.screen().root
        limits = randr.get_screen_size_range(root)
        if not (limits.min_width <= width <= limits.max_width
                and limits.min_height <= height <= limits.max_height):
            raise ScreenError(f"{width}x{height} is outside the screen's range "
                              f"{limits.max_width}x{limits.max_height}")
        s = d.screen()
        if (s.width_in_pixels, s.height_in_pixels) == (width, height):
            return
        res = randr.get_screen_resources(root)
        if not res.crtcs or not res.outputs:
            raise ScreenError("the X server has no CRTC to resize")
        crtc, output = res.crtcs[0], res.outputs[0]
        name = f"{width}x{height}"
        mode = next((m.id for m, n in zip(res.modes, _mode_names(res), strict=False)
                     if n == name), None)
        if mode is None:
            info = {"id": 0, "width": width, "height": height, "dot_clock": 0,
                    "h_sync_start": 0, "h_sync_end": 0, "h_total": width, "h_skew": 0,
                    "v_sync_start": 0, "v_sync_end": 0, "v_total": height,
                    "name_length": len(name), "flags": 0}
            mode = randr.create_mode(root, info, name).mode
            randr.add_output_mode(d, output, mode)
        cur_w, cur_h = s.width_in_pixels, s.height_in_pixels
        if width > cur_w or height > cur_h:
            # Growing: the screen must hold the new mode before the CRTC takes it.
            big_w, big_h = max(width, cur_w), max(height, cur_h)
            randr.set_screen_size(root, big_w, big_h, round(big_w * 25.4 / DPI),
                                  round(big_h * 25.4 / DPI))
        reply = randr.set_crtc_config(d, crtc, res.config_timestamp, 0, 0, mode,
                                      randr.Rotate_0, [output])
        if reply.status != 0:
            raise ScreenError(f"the CRTC refused {name} (status {reply.status})")
        randr.set_screen_size(root, width, height, round(width * 25.4 / DPI),
                              round(height * 25.4 / DPI))
        d.sync()
    except ScreenError:
        raise
    except Exception as e:  # Xlib raises its own error tree from the reply
        raise ScreenError(f"RandR resize to {width}x{height} failed: {e}") from e
    finally:
        if conn is None:
            d.close()


def _mode_names(res: object) -> list[str]:
    """Names of the modes in *res* (``get_screen_resources`` packs them in one string)."""
    names: list[str] = []
    raw = getattr(res, "mode_names", "")
    pos = 0
    for m in getattr(res, "modes", []):
        names.append(raw[pos:pos + m.name_length])
        pos += m.name_length
    return names
