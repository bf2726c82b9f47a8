"""The video source of a session: capture once, encode once, fan out.

:class:`VideoSource` is the facade the rest of the runtime agent uses
(``start``, ``subscribe``, ``request_keyframe``, ``screenshot_png``,
``stats``, ``aclose``). It wires three parts, each in its own module:

* :mod:`agent_side.videoworker` — the capture→encode thread (grab, convert,
  encode once per codec), fed through a :class:`~agent_side.videoworker.WorkerInbox`;
* :mod:`agent_side.governor` — the frame budget: up to ``fps`` frames a second
  (default 60), lowered when the worker or a consumer cannot keep up;
* :mod:`agent_side.fanout` — the subscriptions each encoded frame is copied to;

plus :mod:`agent_side.settle`, which makes the worker encode one near-lossless
refinement ``refresh_delay_s`` after the screen stops changing.

Capture is lazy and damage driven: the thread sleeps on the X connection
while nobody subscribes; with subscribers it captures only when the screen
changed.

Exceptions: :class:`MediaError` (base), :class:`SubscriptionClosed`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time

import av
import numpy as np

from .capture import ScreenCapture
from .encoder import CODECS, EncodedFrame, EncoderConfig
from .fanout import BITRATE_POLICIES, Fanout, MediaError, PacketSubscription, SubscriptionClosed
from .governor import GovernorConfig
from .videoworker import CaptureEncodeWorker, WorkerInbox, WorkerSettings

__all__ = ["MediaConfig", "MediaError", "PacketSubscription", "SubscriptionClosed", "VideoSource"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MediaConfig:
    """Configuration of one session's video source."""

    display: str
    """X display to capture, e.g. ``":1"``."""
    width: int
    """Captured and encoded width (even); the display must be at least this wide."""
    height: int
    """Captured and encoded height (even)."""
    fps: int = 60
    """Upper bound on encoded frames per second; the governor may go lower."""
    cpu_budget: float = 0.6
    """CPU the capture→encode thread may use (fraction of one core) before the
    governor lowers the frame rate."""
    keyframe_interval_s: float = 3.0
    """Periodic keyframe interval while frames are being encoded."""
    min_bitrate: int = 1_500_000
    """Floor of the encoder bitrate cap: below this, text stops being readable."""
    max_bitrate: int = 20_000_000
    """Ceiling of the encoder bitrate cap."""
    start_bitrate: int = 8_000_000
    """Cap used until a subscriber reports a bandwidth estimate."""
    bitrate_policy: str = "steering"
    """Whose estimates set the cap: ``steering`` (viewers that may take control; view-only
    ones are paced) or ``min`` (every viewer); see :mod:`agent_side.fanout`."""
    keyframe_min_gap_s: float = 0.5
    """Keyframe requests of a codec (PLI/FIR, a viewer's request, an overflow) closer
    than this are merged into one keyframe at the end of the gap: each one makes every
    viewer's next frame a big one, and a viewer may send them as fast as it likes."""
    keyframe_token_gap_s: float = 2.0
    """The same per view token (subscriptions with a ``keyframe_group``): one token's
    viewers get a keyframe on request at most this often (the periodic keyframe, every
    ``keyframe_interval_s``, comes anyway)."""
    refresh_delay_s: float = 0.15
    """This long after the screen stops changing, one refinement (near-lossless
    refresh of what was encoded lossy) is encoded."""
    refine_passes: int = 6
    """Refinements per settle at most (``refresh_delay_s`` apart; fewer when one is not
    held back by the bitrate cap; see :mod:`agent_side.settle`)."""
    damage_settle_s: float = 0.003
    """After the first damage of a burst, wait up to this long for more before grabbing.

    Apps draw one update in several X requests (xterm scrolls with a
    CopyArea, then draws the new line); grabbing on the first one shows half
    an update and the rest waits a whole frame slot. Measured with
    ``benchmarks/glass_to_glass.py``."""
    queue_frames: int = 30
    """Per-subscriber queue bound; on overflow the queue drops to the next keyframe."""
    use_damage: bool = True
    """Use XDAMAGE when available; False forces the grab-and-compare fallback."""
    convert_threads: int = 1
    """swscale threads for full-frame conversion."""
    convert_interpolation: str | None = None
    """swscale flags for the chroma subsampling (None = PyAV default, bilinear)."""
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    """Codec tuning; its ``bitrate`` and ``keyframe_interval_s`` are overridden."""
    session_id: str = ""
    """Put in every log line."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(f"width/height must be positive and even, got "
                             f"{self.width}x{self.height}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps must be in 1..120, got {self.fps!r}")
        if not 0 < self.min_bitrate <= self.start_bitrate <= self.max_bitrate:
            raise ValueError(
                "need 0 < min_bitrate <= start_bitrate <= max_bitrate, got "
                f"{self.min_bitrate!r}, {self.start_bitrate!r}, {self.max_bitrate!r}"
            )
        if self.refresh_delay_s <= 0 or self.cpu_budget <= 0 or self.refine_passes < 1:
            raise ValueError("refresh_delay_s and cpu_budget must be > 0, refine_passes >= 1")
        if self.queue_frames < 1:
            raise ValueError(f"queue_frames must be >= 1, got {self.queue_frames!r}")
        if self.bitrate_policy not in BITRATE_POLICIES:
            raise ValueError(f"bitrate_policy must be one of {BITRATE_POLICIES}, "
                             f"got {self.bitrate_policy!r}")
        if self.keyframe_min_gap_s < 0 or self.keyframe_token_gap_s < 0:
            raise ValueError("keyframe_min_gap_s and keyframe_token_gap_s must be >= 0")


class VideoSource:
    """Captures one display on demand and fans encoded packets out.

    ``start()`` opens the display (no capture yet); ``subscribe()`` starts
    capture; ``aclose()`` stops the worker thread and closes all
    subscriptions.
    """

    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self._log_prefix = f"[{config.session_id}] " if config.session_id else ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capture: ScreenCapture | None = None
        self._thread: threading.Thread | None = None
        self._inbox: WorkerInbox | None = None
        self._fanout: Fanout | None = None
        self._worker: CaptureEncodeWorker | None = None
        self._first_frame = threading.Event()
        self._closed = False
        self._started = False
        self._worker_error: BaseException | None = None
        self._keyframe_at: dict[tuple[str, str | None], float] = {}
        """When a keyframe request of each (codec, group) last went on."""
        self._keyframe_deferred: set[tuple[str, str | None]] = set()
        self.keyframe_requests_merged = 0
        """Keyframe requests folded into another one (``keyframe_min_gap_s``)."""

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Open the display and start the (idle) worker thread."""
        if self._started:
            return
        self._started = True
        cfg = self.config
        self._loop = loop = asyncio.get_running_loop()
        capture = ScreenCapture(cfg.display, cfg.width, cfg.height, use_damage=cfg.use_damage)
        await asyncio.to_thread(capture.open)
        self._capture = capture
        self._first_frame.set()  # open() performs the first full grab
        self._inbox = inbox = WorkerInbox()
        self._fanout = fanout = Fanout(
            inbox, queue_frames=cfg.queue_frames, min_bitrate=cfg.min_bitrate,
            max_bitrate=cfg.max_bitrate, start_bitrate=cfg.start_bitrate,
            log_prefix=self._log_prefix, bitrate_policy=cfg.bitrate_policy)
        settings = WorkerSettings(
            width=cfg.width, height=cfg.height, fps=cfg.fps,
            keyframe_interval_s=cfg.keyframe_interval_s, refresh_delay_s=cfg.refresh_delay_s,
            refine_passes=cfg.refine_passes, damage_settle_s=cfg.damage_settle_s,
            start_bitrate=cfg.start_bitrate,
            convert_threads=cfg.convert_threads, convert_interpolation=cfg.convert_interpolation,
            encoder=cfg.encoder,
            governor=GovernorConfig(cap_fps=cfg.fps, cpu_budget=cfg.cpu_budget,
                                    floor_fps=min(5.0, cfg.fps)),
            log_prefix=self._log_prefix)
        self._worker = CaptureEncodeWorker(
            settings, capture, inbox, fanout.deliver, loop.call_soon_threadsafe,
            lambda: fanout.backlog, self._first_frame)
        self._thread = threading.Thread(target=self._run, name=f"video-{cfg.display}",
                                        daemon=True)
        self._thread.start()
        logger.info("%svideo source started on %s (%s, %s, up to %d fps)", self._log_prefix,
                    cfg.display, capture.backend, capture.damage, cfg.fps)

    async def aclose(self) -> None:
        """Stop capturing, join the worker, close all subscriptions. Idempotent."""
        if self._closed:
            return
        self._closed = True
        inbox = self._inbox
        if inbox is not None:
            with inbox.lock:
                inbox.stopping = True
                pending, inbox.screenshots = inbox.screenshots, []
            for fut in pending:
                fut.cancel()
            inbox.wake()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._fanout is not None:
            self._fanout.close_all()
        if self._capture is not None:
            await asyncio.to_thread(self._capture.close)
            self._capture = None
        if inbox is not None:
            inbox.close()
        logger.info("%svideo source closed", self._log_prefix)

    # -- public API ------------------------------------------------------

    def subscribe(self, codec: str = "h264", *, name: str = "", steers_bitrate: bool = True,
                  keyframe_group: str | None = None) -> PacketSubscription:
        """Receive encoded packets of *codec*; the first one is a keyframe.

        *steers_bitrate*: whether this consumer's bandwidth estimate may lower the
        shared encoder's cap (see :mod:`agent_side.fanout`, *Bitrate policy*).
        *keyframe_group*: its keyframe requests count against this group's
        ``keyframe_token_gap_s`` (a view token's id)."""
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r} (expected one of {CODECS})")
        if self._closed or not self._started or self._fanout is None:
            raise MediaError("video source is not running")
        sub = self._fanout.subscribe(self, codec, name or f"{codec}-{id(self):x}",
                                     steers_bitrate)
        sub.keyframe_group = keyframe_group
        return sub

    def request_keyframe(self, codec: str | None = None, group: str | None = None) -> None:
        """Make the next frame of *codec* (default: every codec in use) a keyframe.

        Requests closer than ``keyframe_token_gap_s`` within a *group*, then those for
        one codec closer than ``keyframe_min_gap_s``, are merged: the later ones become
        one request at the end of the gap (none is lost)."""
        inbox = self._inbox
        if inbox is None:
            return
        if codec is not None and self._loop is not None:
            cfg = self.config
            if group is not None and self._merged((codec, group), cfg.keyframe_token_gap_s):
                return
            if self._merged((codec, None), cfg.keyframe_min_gap_s):
                return
        with inbox.lock:
            if codec is None:
                inbox.keyframe_requests.update(inbox.codec_counts)
            else:
                inbox.keyframe_requests.add(codec)
        inbox.wake()

    def _merged(self, key: tuple[str, str | None], gap: float) -> bool:
        """True when a request for *key* within *gap* of the last one was deferred."""
        assert self._loop is not None
        now = time.monotonic()
        wait = self._keyframe_at.get(key, -1e9) + gap - now
        if wait <= 0:
            if len(self._keyframe_at) > 1024:  # groups come and go: forget the old ones
                self._keyframe_at = {k: t for k, t in self._keyframe_at.items()
                                     if now - t < self.config.keyframe_token_gap_s}
            self._keyframe_at[key] = now
            return False
        self.keyframe_requests_merged += 1
        if key not in self._keyframe_deferred:
            self._keyframe_deferred.add(key)
            self._loop.call_later(wait, self._deferred_keyframe, key)
        return True

    def _deferred_keyframe(self, key: tuple[str, str | None]) -> None:
        self._keyframe_deferred.discard(key)
        if not self._closed:
            self.request_keyframe(*key)

    def set_bitrate_estimate(self, subscription: PacketSubscription, bps: int | None) -> None:
        """Record *subscription*'s bandwidth estimate; the cap is the minimum, clamped."""
        subscription.bitrate_estimate = bps
        if self._fanout is not None:
            self._fanout.update_bitrate(subscription.codec)

    @property
    def _bitrate_targets(self) -> dict[str, int]:
        """Encoder caps per codec (as the worker will read them)."""
        return self._inbox.bitrate_targets if self._inbox is not None else {}

    async def screenshot_png(self) -> bytes:
        """PNG of the current screen (exactly width x height), from the capture path."""
        inbox = self._inbox
        if self._closed or not self._started or inbox is None:
            raise MediaError("video source is not running")
        fut: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        with inbox.lock:
            inbox.screenshots.append(fut)
        inbox.wake()
        try:
            bgra = await asyncio.wrap_future(fut)
        except concurrent.futures.CancelledError as e:
            raise MediaError("video source closed during screenshot") from e
        except RuntimeError as e:
            raise MediaError(str(e)) from e
        return await asyncio.to_thread(_encode_png, bgra)

    @property
    def failed(self) -> BaseException | None:
        """The error that ended the worker thread, if it crashed."""
        return self._worker_error

    async def wait_first_frame(self, timeout: float) -> bool:  # noqa: ASYNC109 (public API)
        """True once a first grab succeeded (within *timeout* seconds)."""
        if self._first_frame.is_set():
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._first_frame.is_set():
                return True
            await asyncio.sleep(0.01)
        return self._first_frame.is_set()

    @property
    def stats(self) -> dict[str, object]:
        """Counters and running averages (ms) for metrics and benchmarks."""
        capture = self._capture
        worker = self._worker
        if worker is None:
            return {"frames_captured": 0, "frames_encoded": {"total": 0}, "subscribers": 0,
                    "capture_backend": None, "damage": None}
        st = worker.stats
        encoded = dict(st.frames_encoded)
        fanout = self._fanout
        return {
            "frames_captured": st.frames_captured,
            "frames_encoded": {**encoded, "total": sum(encoded.values())},
            "grab_ms": st.grab_ms.mean,
            "convert_ms": st.convert_ms.mean,
            "encode_ms": {c: s.mean for c, s in st.encode_ms.items()},
            "bytes_encoded": {**st.bytes_encoded, "total": sum(st.bytes_encoded.values())},
            "stage_totals": self._stage_totals(),
            "subscribers": fanout.count if fanout is not None else 0,
            "capture_backend": capture.backend if capture else None,
            "damage": capture.damage if capture else None,
            "fps": {"cap": self.config.fps,
                    "governed": round(st.governed_fps, 2),
                    "effective": round(st.rate.rate(time.monotonic()), 2),
                    **st.governor},
            "refinements": st.refinements,
            "refine_bytes": {**st.refine_bytes, "total": sum(st.refine_bytes.values())},
            "keyframes": st.keyframes,
            "keyframe_requests_merged": self.keyframe_requests_merged,
            "bitrate": {"policy": self.config.bitrate_policy,
                        "cap": dict(self._bitrate_targets)},
            "loop_lag_ms": round(fanout.loop_lag_s * 1000, 3) if fanout is not None else None,
        }

    def _stage_totals(self) -> dict[str, dict[str, float]]:
        """Per stage ``{"count", "ms"}`` since start: means over any window by difference."""
        assert self._worker is not None
        st = self._worker.stats
        stages = {"grab": st.grab_ms, "convert": st.convert_ms}
        stages.update({f"encode_{c}": s for c, s in st.encode_ms.items()})
        return {name: {"count": s.count, "ms": s.total} for name, s in stages.items()}

    def timing_samples(self) -> dict[str, list[float]]:
        """Recent per-frame timings in ms (grab, convert, encode_<codec>)."""
        if self._worker is None:
            return {}
        st = self._worker.stats
        out = {"grab": list(st.grab_ms.samples), "convert": list(st.convert_ms.samples)}
        for codec, stat in st.encode_ms.items():
            out[f"encode_{codec}"] = list(stat.samples)
        return out

    # -- internals -------------------------------------------------------

    def _unsubscribe(self, sub: PacketSubscription) -> None:
        if self._fanout is not None:
            self._fanout.unsubscribe(sub)

    def _deliver(self, frame: EncodedFrame) -> None:
        """Hand *frame* to the subscribers now (the worker's path, for tests and tools)."""
        if self._fanout is not None:
            self._fanout.deliver(frame, time.monotonic())

    def _run(self) -> None:
        assert self._worker is not None
        try:
            self._worker.run()
        except BaseException as e:  # logged; the source stays closed for consumers
            self._worker_error = e
            logger.exception("%svideo worker crashed", self._log_prefix)
            inbox = self._worker.inbox
            with inbox.lock:
                pending, inbox.screenshots = inbox.screenshots, []
            for fut in pending:
                fut.set_exception(MediaError(f"video worker crashed: {e}"))


def _encode_png(bgra: np.ndarray) -> bytes:
    """PNG bytes of a BGRA picture (PyAV's png encoder, no alpha)."""
    height, width = bgra.shape[:2]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgra[:, :, 2::-1]), format="rgb24")
    ctx = av.CodecContext.create("png", "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "rgb24"
    packets = ctx.encode(frame)
    packets += ctx.encode(None)
    return b"".join(bytes(p) for p in packets)
