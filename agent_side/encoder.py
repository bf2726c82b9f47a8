"""Video encoders (H.264, VP8) and the BGRA -> YUV 4:2:0 converter.

``VideoEncoder`` is a tiny ABC; :func:`create_encoder` picks the
implementation. Encoders are blocking and belong to one worker thread.

Rate control (H.264): CRF with a VBV cap (``maxrate`` = the bitrate target).
Measured through PyAV 18 / FFmpeg 8: libx264's wrapper only re-applies
``bit_rate`` (ABR) live; ``rc_max_rate`` is read-only in PyAV and the CRF
value is a private option read at open. So a changed target cannot reach a
running CRF+VBV encoder. We therefore quantise: the encoder is re-created
(with a keyframe) only when the target moved by at least
``EncoderConfig.bitrate_change_ratio`` and at most once per
``bitrate_change_min_interval_s``. VP8 is treated the same way.

Refinement (refine on settle, :mod:`agent_side.settle`): ``encode(...,
refine=rect)`` encodes one frame whose *rect* gets a lower quantiser. PyAV
cannot change x264's CRF on a running encoder, but libx264 reads per-frame
quantiser offsets from ``AV_FRAME_DATA_REGIONS_OF_INTEREST`` side data, which
FFmpeg's ``addroi`` filter attaches (``refine_qoffset`` x 51 QP, so -0.2 is
about -10 QP). libx264 applies them only with adaptive quantisation on, and
x264 turns AQ off when its strength is 0: the encoder runs ``aq-mode=1`` at a
near-zero ``aq_strength`` (measured: +0.5-0.8 ms per 1600x900 frame). On
synthetic scrolled text at 1600x900 (8 Mbit/s cap, 1 s VBV buffer) one
refinement lifted the page from 41.9 to 50.1 dB (Y) for 233 kB and a second
one to 52.0 dB for 87 kB more, against 474 kB for a keyframe.
VP8 ignores the offsets in realtime mode (measured: same bytes and PSNR at
any offset), so there a refinement is a plain re-encode of the settled
picture, which libvpx already codes to ~50 dB.

Conversion: :class:`YuvConverter` keeps one yuv420p frame and converts only
the rectangle that changed, with a persistent swscale context per size.
Measured at 1600x900 on the 2-core box: full-frame swscale 2.4 ms CPU
(1.35 ms wall with 2 threads); a typing-sized rectangle well under 0.1 ms.

Exceptions: :class:`EncoderError`.
"""

from __future__ import annotations

import fractions
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .capture import Rect
from .errors import AgentSideError

__all__ = [
    "CODECS",
    "EncodedFrame",
    "EncoderConfig",
    "EncoderError",
    "VideoEncoder",
    "YuvConverter",
    "create_encoder",
]

logger = logging.getLogger(__name__)

CODECS = ("h264", "vp8")
"""Codec names understood by :func:`create_encoder`."""

TIME_BASE = fractions.Fraction(1, 90000)
"""Time base of every pts passed to and returned from encoders (RTP video clock)."""


class EncoderError(AgentSideError):
    """An encoder could not be created or failed to encode."""


@dataclass(frozen=True)
class EncoderConfig:
    """Settings shared by all encoders of one video source."""

    bitrate: int = 4_000_000
    """Initial bitrate cap in bit/s (VBV max rate for H.264, target for VP8)."""
    keyframe_interval_s: float = 3.0
    """A keyframe is forced when the last one is at least this old (encoded frames only)."""
    crf: int = 23
    """H.264 constant rate factor; the VBV cap lowers quality only when needed."""
    preset: str = "ultrafast"
    """x264 preset; ultrafast measured best for desktop content at 30 fps on 2 cores."""
    vbv_buffer_s: float = 1.0
    """VBV buffer size as seconds of the bitrate cap (smaller = burstier frames get capped).
    Synthetic 1600x900 text after a scroll, 8 Mbit/s cap: a refinement came out at
    47.9 / 50.1 / 50.1 dB and a keyframe at 29.3 / 40.2 / 44.9 dB with 0.5 / 1 / 2 s.
    1 s: refinements held back by the cap are followed by more passes
    (:mod:`agent_side.settle`), and no single frame grows past ~1 s of the cap."""
    threads: int = 1
    """Encoder threads; 2 x264 threads gave no gain on desktop content (MEASUREMENTS.md)."""
    vp8_cpu_used: int = 16
    """libvpx ``cpu-used`` for realtime VP8 (higher is faster)."""
    bitrate_change_ratio: float = 1.5
    """Re-create the encoder only when the target moved by at least this factor."""
    bitrate_change_min_interval_s: float = 2.0
    """Minimum time between two bitrate-driven re-creations (each costs a keyframe)."""
    refine_qoffset: float = -0.2
    """Quantiser offset of a refinement, in libx264's ROI scale (x 51 QP; -0.2 ~ -10 QP)."""
    refine_done_qp: float = 25.0
    """A refinement whose base quantiser (before the region offset) is at most this
    was not held back by the bitrate cap: measured 17-22 for complete passes on
    1600x900 text, 28-39 for passes the VBV cap squeezed."""
    aq_strength: float = 0.01
    """x264 AQ strength: near zero, so AQ only carries the refinement offsets."""

    def __post_init__(self) -> None:
        if self.bitrate <= 0:
            raise ValueError(f"bitrate must be > 0, got {self.bitrate!r}")
        if self.keyframe_interval_s <= 0:
            raise ValueError(f"keyframe_interval_s must be > 0, got {self.keyframe_interval_s!r}")
        if not -1.0 <= self.refine_qoffset <= 0.0:
            raise ValueError(f"refine_qoffset must be in [-1, 0], got {self.refine_qoffset!r}")
        if self.bitrate_change_ratio < 1.0:
            raise ValueError(
                f"bitrate_change_ratio must be >= 1, got {self.bitrate_change_ratio!r}"
            )


@dataclass(frozen=True)
class EncodedFrame:
    """One encoded picture: everything a packetizer or muxer needs."""

    codec: str
    """``"h264"`` (Annex-B byte stream) or ``"vp8"``."""
    data: bytes
    """The bitstream of one frame."""
    pts: int
    """Presentation time in :data:`TIME_BASE` units (wall clock based)."""
    keyframe: bool
    """True for an IDR (H.264) or key frame (VP8); decodable on its own."""
    qp: float | None = None
    """The frame's base quantiser as the encoder reported it (libx264: before region
    offsets; a value well above the motion frames' means the VBV cap held it back)."""

    def to_packet(self) -> av.Packet:
        """A fresh :class:`av.Packet` (callers may mutate it, e.g. when muxing)."""
        packet = av.Packet(self.data)
        packet.pts = self.pts
        packet.dts = self.pts
        packet.time_base = TIME_BASE
        packet.is_keyframe = self.keyframe
        return packet


class VideoEncoder(ABC):
    """Encodes yuv420p frames of a fixed size, one packet per frame."""

    codec: str

    def __init__(self, width: int, height: int, config: EncoderConfig) -> None:
        self.width = width
        self.height = height
        self.config = config
        self._bitrate = config.bitrate
        self._wanted_bitrate = config.bitrate
        self._last_recreate = -1e9
        self._last_keyframe_pts: int | None = None
        self._context: av.VideoCodecContext | None = None

    @property
    def bitrate(self) -> int:
        """The bitrate the running context was opened with."""
        return self._bitrate

    def set_bitrate(self, bps: int) -> None:
        """Ask for a new bitrate; applied on a later :meth:`encode` if large enough."""
        self._wanted_bitrate = max(1, int(bps))

    def _bitrate_change_due(self) -> bool:
        wanted, current = self._wanted_bitrate, self._bitrate
        if wanted == current:
            return False
        ratio = max(wanted, current) / min(wanted, current)
        if ratio < self.config.bitrate_change_ratio:
            return False
        return time.monotonic() - self._last_recreate >= self.config.bitrate_change_min_interval_s

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool = False,
               refine: Rect | None = None) -> EncodedFrame | None:
        """Encode *frame* (yuv420p, this encoder's size) at *pts* (1/90000 s).

        With *refine*, that region is encoded at refine quality (see the module
        docstring); the rest of the frame as usual.
        """
        if self._context is not None and self._bitrate_change_due():
            logger.info("%s encoder: bitrate %d -> %d bit/s (re-created, keyframe)",
                        self.codec, self._bitrate, self._wanted_bitrate)
            self._bitrate = self._wanted_bitrate
            self._context = None
        if self._context is None:
            self._context = self._open(self._bitrate)
            self._last_recreate = time.monotonic()
            keyframe = True
        interval = int(self.config.keyframe_interval_s * 90000)
        # Never turn a refinement into the periodic keyframe: a keyframe is encoded at
        # motion quality, so it would undo the refinement and start another series.
        if refine is None and (self._last_keyframe_pts is None
                               or pts - self._last_keyframe_pts >= interval):
            keyframe = True
        if refine is not None:
            frame = self._refined(frame, refine)
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        try:
            packets = self._context.encode(frame)
        except av.error.FFmpegError as e:
            raise EncoderError(f"{self.codec} encode failed: {e}") from e
        if not packets:
            return None
        data = b"".join(bytes(p) for p in packets)
        is_key = any(p.is_keyframe for p in packets)
        if is_key:
            self._last_keyframe_pts = pts
        return EncodedFrame(codec=self.codec, data=data, pts=pts, keyframe=is_key,
                            qp=_reported_qp(packets[-1]))

    def close(self) -> None:
        """Drop the codec context (no flush: encoders are configured for zero delay)."""
        self._context = None

    @abstractmethod
    def _open(self, bitrate: int) -> av.VideoCodecContext:
        """Create and configure an encoder context for *bitrate*."""

    def _refined(self, frame: av.VideoFrame, rect: Rect) -> av.VideoFrame:
        """*frame* marked for refine quality in *rect* (default: unchanged)."""
        return frame


class H264Encoder(VideoEncoder):
    """libx264, constrained baseline, zerolatency, Annex-B output."""

    codec = "h264"

    def _open(self, bitrate: int) -> av.VideoCodecContext:
        cfg = self.config
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = self.width
        ctx.height = self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = fractions.Fraction(30, 1)
        ctx.thread_count = cfg.threads
        ctx.gop_size = 1 << 30  # keyframes are ours to decide (interval, requests)
        ctx.max_b_frames = 0
        ctx.options = {
            "preset": cfg.preset,
            "profile": "baseline",
            "tune": "zerolatency",
            "crf": str(cfg.crf),
            "maxrate": str(bitrate),
            "bufsize": str(max(1, int(bitrate * cfg.vbv_buffer_s))),
            "forced-idr": "1",
            "aq-mode": "1",
            "aq-strength": str(cfg.aq_strength),
            "x264-params": "scenecut=0:repeat-headers=1:bframes=0",
        }
        try:
            ctx.open()
        except av.error.FFmpegError as e:
            raise EncoderError(f"cannot open libx264: {e}") from e
        logger.info("h264 encoder %dx%d opened: preset %s crf %d cap %d bit/s",
                    self.width, self.height, cfg.preset, cfg.crf, bitrate)
        return ctx

    def _refined(self, frame: av.VideoFrame, rect: Rect) -> av.VideoFrame:
        """A reference to *frame* carrying a region-of-interest offset (``addroi``)."""
        graph = av.filter.Graph()
        src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                               time_base=TIME_BASE)
        roi = graph.add("addroi", f"x={rect.x}:y={rect.y}:w={rect.width}:h={rect.height}:"
                                  f"qoffset={self.config.refine_qoffset}:clear=1")
        sink = graph.add("buffersink")
        src.link_to(roi)
        roi.link_to(sink)
        graph.configure()
        graph.push(frame)
        out = graph.pull()
        assert isinstance(out, av.VideoFrame)
        return out


class Vp8Encoder(VideoEncoder):
    """libvpx VP8 in realtime mode."""

    codec = "vp8"

    def _open(self, bitrate: int) -> av.VideoCodecContext:
        cfg = self.config
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.width = self.width
        ctx.height = self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = fractions.Fraction(30, 1)
        ctx.bit_rate = bitrate
        ctx.gop_size = 1 << 30
        ctx.thread_count = cfg.threads
        ctx.qmin = 4
        ctx.qmax = 56
        ctx.options = {
            "deadline": "realtime",
            "cpu-used": str(cfg.vp8_cpu_used),
            "lag-in-frames": "0",
            "error-resilient": "1",
            "static-thresh": "0",
            "undershoot-pct": "95",
            "overshoot-pct": "15",
            "bufsize": str(max(1, int(bitrate * cfg.vbv_buffer_s))),
            "maxrate": str(bitrate),
            "auto-alt-ref": "0",
        }
        try:
            ctx.open()
        except av.error.FFmpegError as e:
            raise EncoderError(f"cannot open libvpx: {e}") from e
        logger.info("vp8 encoder %dx%d opened: cpu-used %d, %d bit/s",
                    self.width, self.height, cfg.vp8_cpu_used, bitrate)
        return ctx


FF_QP2LAMBDA = 118
"""FFmpeg's lambda units per quantiser step (``quality_stats`` side data)."""


def _reported_qp(packet: av.Packet) -> float | None:
    """The quantiser in the packet's ``quality_stats`` side data (libx264 sets it)."""
    if not packet.has_sidedata("quality_stats"):
        return None
    raw = bytes(packet.get_sidedata("quality_stats"))
    return int.from_bytes(raw[:4], "little") / FF_QP2LAMBDA if len(raw) >= 4 else None


def create_encoder(codec: str, width: int, height: int, config: EncoderConfig) -> VideoEncoder:
    """Create an encoder for *codec* (``"h264"`` or ``"vp8"``)."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise EncoderError(f"frame size must be positive and even, got {width}x{height}")
    if codec == "h264":
        return H264Encoder(width, height, config)
    if codec == "vp8":
        return Vp8Encoder(width, height, config)
    raise EncoderError(f"unsupported codec {codec!r} (expected one of {CODECS})")


class YuvConverter:
    """Keeps a yuv420p copy of a BGRA picture, updated rectangle by rectangle.

    A persistent :class:`VideoReformatter` per rectangle size reuses its
    swscale context; rectangles larger than ``full_frame_fraction`` of the
    screen are converted as one full frame (``threads`` swscale threads).
    """

    def __init__(self, width: int, height: int, *, threads: int = 2,
                 full_frame_fraction: float = 0.5, interpolation: str | None = None) -> None:
        self.width = width
        self.interpolation = interpolation
        self.height = height
        self.threads = threads
        self.full_frame_fraction = full_frame_fraction
        self.frame = av.VideoFrame(width, height, "yuv420p")
        """The converted picture; encoders read it, :meth:`update` writes it."""
        self._planes = self._views(self.frame)
        self._full = VideoReformatter()
        self._partial = VideoReformatter()
        self._complete = False

    def _views(self, frame: av.VideoFrame) -> list[np.ndarray]:
        return [self._plane_view(frame, i, self.width >> min(i, 1), self.height >> min(i, 1))
                for i in range(3)]

    @staticmethod
    def _plane_view(frame: av.VideoFrame, index: int, width: int, height: int) -> np.ndarray:
        plane = frame.planes[index]
        raw = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(height, plane.line_size)
        return raw[:, :width]

    def update(self, source: av.VideoFrame, pixels: np.ndarray, rect: Rect | None) -> None:
        """Convert *rect* (even-aligned) of *source* (whose pixels are *pixels*).

        The first call always converts the whole frame.
        """
        if (rect is None or not self._complete
                or rect.area >= self.full_frame_fraction * self.width * self.height):
            self._complete = True
            # Adopt swscale's output instead of copying 2 MB into our frame.
            self.frame = self._full.reformat(source, format="yuv420p", threads=self.threads,
                                             interpolation=self.interpolation)
            self._planes = self._views(self.frame)
            return
        sub = np.ascontiguousarray(pixels[rect.y:rect.y + rect.height, rect.x:rect.x + rect.width])
        out = self._partial.reformat(av.VideoFrame.from_ndarray(sub, format="bgra"),
                                     format="yuv420p", threads=1,
                                     interpolation=self.interpolation)
        self._copy_planes(out, rect)

    def _copy_planes(self, out: av.VideoFrame, rect: Rect) -> None:
        for i, dst in enumerate(self._planes):
            shift = min(i, 1)
            w, h = rect.width >> shift, rect.height >> shift
            x, y = rect.x >> shift, rect.y >> shift
            dst[y:y + h, x:x + w] = self._plane_view(out, i, w, h)
