"""Screenshots at the agent's size, and zoomed regions (PNG in, PNG out, PyAV only).

The runtime agent takes screenshots at the session's full resolution; a session
with an ``agent_resolution`` shows its agent a smaller picture, and the
``zoom`` action returns a region of the full-resolution screen enlarged to the
agent's picture budget. Both are a crop and a resize done here with swscale
(area averaging down, bicubic up), so the runtime agent stays as it is.

Every function is blocking (decode, scale and encode of a full screen take tens
of milliseconds): call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from typing import Final

import av
import numpy as np
from av.video.reformatter import Interpolation

__all__ = ["ImagingError", "crop_and_resize", "fit_within", "png_size", "resize_png"]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


class ImagingError(Exception):
    """A picture that is not a PNG we can decode."""


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the PNG header, without decoding."""
    if not png.startswith(PNG_SIGNATURE) or len(png) < 24:
        raise ImagingError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _decode(png: bytes) -> np.ndarray:
    png_size(png)
    ctx = av.CodecContext.create("png", "r")
    try:
        frames = ctx.decode(av.Packet(png))
    except av.FFmpegError as e:
        raise ImagingError(f"the PNG does not decode: {e}") from e
    if not frames:
        raise ImagingError("the PNG holds no picture")
    rgb: np.ndarray = frames[0].to_ndarray(format="rgb24")
    return rgb


def _encode(rgb: np.ndarray) -> bytes:
    height, width = rgb.shape[:2]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    ctx = av.CodecContext.create("png", "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "rgb24"
    packets = ctx.encode(frame)
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    src_h, src_w = rgb.shape[:2]
    if (src_w, src_h) == (width, height):
        return rgb
    shrinking = width <= src_w and height <= src_h
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    out = frame.reformat(width=width, height=height, format="rgb24",
                         interpolation=Interpolation.AREA if shrinking else Interpolation.BICUBIC)
    resized: np.ndarray = out.to_ndarray()
    return resized


def fit_within(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest size with the aspect of ``width`` x ``height`` inside the budget."""
    scale = min(max_width / width, max_height / height)
    return max(1, min(max_width, round(width * scale))), max(1, min(max_height, round(height * scale)))


def resize_png(png: bytes, width: int, height: int) -> bytes:
    """The PNG scaled to exactly ``width`` x ``height`` (unchanged if it is that size)."""
    if png_size(png) == (width, height):
        return png
    return _encode(_resize(_decode(png), width, height))


def crop_and_resize(png: bytes, box: tuple[int, int, int, int], width: int, height: int) -> bytes:
    """The half-open ``box`` (x0, y0, x1, y1) of the PNG, scaled to ``width`` x ``height``."""
    rgb = _decode(png)
    x0, y0, x1, y1 = box
    src_h, src_w = rgb.shape[:2]
    if not (0 <= x0 < x1 <= src_w and 0 <= y0 < y1 <= src_h):
        raise ImagingError(f"box {box} is outside the {src_w}x{src_h} picture")
    return _encode(_resize(rgb[y0:y1, x0:x1], width, height))
