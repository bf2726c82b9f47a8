"""The video source of a session: capture once, encode once, fan out.

:class:`VideoSource` owns the :class:`~agent_side.capture.ScreenCapture`, the
:class:`~agent_side.encoder.YuvConverter` and one encoder per codec in use.
Grab, convert and encode run in ONE worker thread; packets reach asyncio via
``loop.call_soon_threadsafe`` and are copied into every
:class:`PacketSubscription` of that codec.

Capture is lazy and damage driven: the thread sleeps on the X connection
while nobody subscribes; with subscribers it captures only when the screen
changed, at most ``fps`` times a second, plus one refresh frame
``refresh_delay_s`` after changes stop.

Exceptions: :class:`MediaError` (base), :class:`SubscriptionClosed`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time

import av
import numpy as np

from .capture import Rect, ScreenCapture, bounding_box
from .encoder import CODECS, EncodedFrame, EncoderConfig, VideoEncoder, YuvConverter, create_encoder
from .errors import AgentSideError

__all__ = ["MediaConfig", "MediaError", "PacketSubscription", "SubscriptionClosed", "VideoSource"]

logger = logging.getLogger(__name__)


MAX_FRAME_FAILURES = 10
"""Consecutive failed frames (grab/convert/encode) after which the worker gives up."""


class FrameBudget:
    """The frame-rate cap as a token bucket: ``fps`` frames a second on average,
    up to ``burst`` back to back.

    A fixed grid (one frame per 1/fps slot) makes a change wait for the next
    slot: up to a whole frame interval of added latency, paid on every frame
    when the screen changes at about the cap rate (scrolling, video). With the
    bucket a change is captured at once whenever the average allows it.
    """

    def __init__(self, fps: float, burst: float = 2.0) -> None:
        self._rate = fps
        self._burst = burst
        self._tokens = burst
        self._at = time.monotonic()

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def next_at(self, now: float) -> float:
        """The earliest time the next frame may be captured."""
        self._refill(now)
        return now if self._tokens >= 1 else now + (1 - self._tokens) / self._rate

    def spend(self, now: float) -> None:
        """One frame was captured (forced frames may overdraw, down to -1)."""
        self._refill(now)
        self._tokens = max(-1.0, self._tokens - 1)


class MediaError(AgentSideError):
    """Base class of video source errors."""


class SubscriptionClosed(MediaError):
    """The subscription (or its source) was closed."""


@dataclasses.dataclass(frozen=True)
class MediaConfig:
    """Configuration of one session's video source."""

    display: str
    """X display to capture, e.g. ``":1"``."""
    width: int
    """Captured and encoded width (even); the display must be at least this wide."""
    height: int
    """Captured and encoded height (even)."""
    fps: int = 30
    """Upper bound on captured frames per second."""
    keyframe_interval_s: float = 3.0
    """Periodic keyframe interval while frames are being encoded."""
    min_bitrate: int = 1_500_000
    """Floor of the encoder bitrate cap: below this, text stops being readable."""
    max_bitrate: int = 20_000_000
    """Ceiling of the encoder bitrate cap."""
    start_bitrate: int = 8_000_000
    """Cap used until a subscriber reports a bandwidth estimate."""
    refresh_delay_s: float = 0.2
    """One full refresh frame is encoded this long after changes stop."""
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
        if self.queue_frames < 1:
            raise ValueError(f"queue_frames must be >= 1, got {self.queue_frames!r}")


class PacketSubscription:
    """One consumer's view of the encoded stream of one codec.

    Starts at a keyframe; when it falls ``queue_frames`` behind, everything
    queued is dropped and it resumes at the next keyframe (one is requested).
    """

    def __init__(self, source: VideoSource, codec: str, name: str, maxlen: int) -> None:
        self.codec = codec
        self.name = name
        self._source = source
        self._maxlen = maxlen
        self._queue: collections.deque[EncodedFrame] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._need_keyframe = True
        self._closed = False
        self.bitrate_estimate: int | None = None
        """Last bandwidth estimate reported for this consumer (bit/s)."""
        self.dropped = 0
        """Frames dropped for this consumer (overflow or waiting for a keyframe)."""

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> av.Packet:
        """The next packet (pts in 1/90000 s); raises :class:`SubscriptionClosed`."""
        while not self._queue:
            if self._closed:
                raise SubscriptionClosed(f"subscription {self.name!r} is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft().to_packet()

    def get_nowait(self) -> av.Packet | None:
        """The next packet if one is queued, else None."""
        return self._queue.popleft().to_packet() if self._queue else None

    def request_keyframe(self) -> None:
        """Ask the shared encoder for a keyframe (e.g. on PLI/FIR)."""
        self._source.request_keyframe(self.codec)

    def set_bitrate_estimate(self, bps: int | None) -> None:
        """Report this consumer's bandwidth estimate (e.g. from REMB)."""
        self._source.set_bitrate_estimate(self, bps)

    def close(self) -> None:
        """Stop receiving; wakes a pending :meth:`get`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._wake()
        self._source._unsubscribe(self)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _push(self, frame: EncodedFrame) -> None:
        """Called on the event loop for every encoded frame of this codec."""
        if self._closed:
            return
        if self._need_keyframe and not frame.keyframe:
            self.dropped += 1
            return
        if frame.keyframe:
            self._need_keyframe = False
        elif len(self._queue) >= self._maxlen:
            self.dropped += len(self._queue) + 1
            self._queue.clear()
            self._need_keyframe = True
            logger.debug("subscriber %r overflowed; waiting for a keyframe", self.name)
            self._source.request_keyframe(self.codec)
            return
        if frame.keyframe and len(self._queue) >= self._maxlen:
            self.dropped += len(self._queue)
            self._queue.clear()
        self._queue.append(frame)
        self._wake()


class _RunningStat:
    """Running mean plus a bounded history for percentiles."""

    def __init__(self, history: int = 2000) -> None:
        self.count = 0
        self.total = 0.0
        self.samples: collections.deque[float] = collections.deque(maxlen=history)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.samples.append(value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


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
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = -1, -1
        # Shared with the worker (guarded by _lock):
        self._codec_counts: dict[str, int] = {}
        self._keyframe_requests: set[str] = set()
        self._bitrate_targets: dict[str, int] = {}
        self._screenshot_requests: list[concurrent.futures.Future[np.ndarray]] = []
        self._stopping = False
        # Event-loop side:
        self._subscriptions: dict[str, list[PacketSubscription]] = {c: [] for c in CODECS}
        self._first_frame = threading.Event()
        self._closed = False
        self._started = False
        # Worker-owned statistics (read racily for stats; ints/floats only):
        self._frames_captured = 0
        self._frames_encoded: dict[str, int] = {c: 0 for c in CODECS}
        self._bytes_encoded: dict[str, int] = {c: 0 for c in CODECS}
        self._grab_ms = _RunningStat()
        self._convert_ms = _RunningStat()
        self._encode_ms: dict[str, _RunningStat] = {c: _RunningStat() for c in CODECS}
        self._worker_error: BaseException | None = None
        self._t0 = time.monotonic()
        self._last_pts = -1

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Open the display and start the (idle) worker thread."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        capture = ScreenCapture(self.config.display, self.config.width, self.config.height,
                                use_damage=self.config.use_damage)
        await asyncio.to_thread(capture.open)
        self._capture = capture
        self._first_frame.set()  # open() performs the first full grab
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._run, name=f"video-{self.config.display}",
                                        daemon=True)
        self._thread.start()
        logger.info("%svideo source started on %s (%s, %s)", self._log_prefix,
                    self.config.display, capture.backend, capture.damage)

    async def aclose(self) -> None:
        """Stop capturing, join the worker, close all subscriptions. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stopping = True
            pending = self._screenshot_requests
            self._screenshot_requests = []
        for fut in pending:
            fut.cancel()
        self._wake()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for subs in self._subscriptions.values():
            for sub in list(subs):
                sub.close()
        if self._capture is not None:
            await asyncio.to_thread(self._capture.close)
            self._capture = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        logger.info("%svideo source closed", self._log_prefix)

    # -- public API ------------------------------------------------------

    def subscribe(self, codec: str = "h264", *, name: str = "") -> PacketSubscription:
        """Receive encoded packets of *codec*; the first one is a keyframe."""
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r} (expected one of {CODECS})")
        if self._closed or not self._started:
            raise MediaError("video source is not running")
        sub = PacketSubscription(self, codec, name or f"{codec}-{id(self):x}",
                                 self.config.queue_frames)
        self._subscriptions[codec].append(sub)
        with self._lock:
            self._codec_counts[codec] = self._codec_counts.get(codec, 0) + 1
            self._keyframe_requests.add(codec)
        self._update_bitrate(codec)
        logger.info("%ssubscriber %r joined (%s, %d total)", self._log_prefix, sub.name, codec,
                    self._subscriber_count())
        self._wake()
        return sub

    def request_keyframe(self, codec: str | None = None) -> None:
        """Make the next frame of *codec* (default: every codec in use) a keyframe."""
        with self._lock:
            if codec is None:
                self._keyframe_requests.update(self._codec_counts)
            else:
                self._keyframe_requests.add(codec)
        self._wake()

    def set_bitrate_estimate(self, subscription: PacketSubscription, bps: int | None) -> None:
        """Record *subscription*'s bandwidth estimate; the cap is the minimum, clamped."""
        subscription.bitrate_estimate = bps
        self._update_bitrate(subscription.codec)

    async def screenshot_png(self) -> bytes:
        """PNG of the current screen (exactly width x height), from the capture path."""
        if self._closed or not self._started:
            raise MediaError("video source is not running")
        fut: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        with self._lock:
            self._screenshot_requests.append(fut)
        self._wake()
        try:
            bgra = await asyncio.wrap_future(fut)
        except concurrent.futures.CancelledError as e:
            raise MediaError("video source closed during screenshot") from e
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
        encoded = dict(self._frames_encoded)
        return {
            "frames_captured": self._frames_captured,
            "frames_encoded": {**encoded, "total": sum(encoded.values())},
            "grab_ms": self._grab_ms.mean,
            "convert_ms": self._convert_ms.mean,
            "encode_ms": {c: s.mean for c, s in self._encode_ms.items()},
            "bytes_encoded": {**self._bytes_encoded, "total": sum(self._bytes_encoded.values())},
            "stage_totals": self._stage_totals(),
            "subscribers": self._subscriber_count(),
            "capture_backend": capture.backend if capture else None,
            "damage": capture.damage if capture else None,
        }

    def _stage_totals(self) -> dict[str, dict[str, float]]:
        """Per stage ``{"count", "ms"}`` since start: means over any window by difference."""
        stages = {"grab": self._grab_ms, "convert": self._convert_ms}
        stages.update({f"encode_{c}": s for c, s in self._encode_ms.items()})
        return {name: {"count": s.count, "ms": s.total} for name, s in stages.items()}

    def timing_samples(self) -> dict[str, list[float]]:
        """Recent per-frame timings in ms (grab, convert, encode_<codec>)."""
        out = {"grab": list(self._grab_ms.samples), "convert": list(self._convert_ms.samples)}
        for codec, stat in self._encode_ms.items():
            out[f"encode_{codec}"] = list(stat.samples)
        return out

    # -- event-loop helpers ---------------------------------------------

    def _subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

    def _unsubscribe(self, sub: PacketSubscription) -> None:
        subs = self._subscriptions[sub.codec]
        if sub not in subs:
            return
        subs.remove(sub)
        with self._lock:
            self._codec_counts[sub.codec] -= 1
            if self._codec_counts[sub.codec] <= 0:
                del self._codec_counts[sub.codec]
        self._update_bitrate(sub.codec)
        logger.info("%ssubscriber %r left (%d remain)", self._log_prefix, sub.name,
                    self._subscriber_count())
        self._wake()

    def _update_bitrate(self, codec: str) -> None:
        cfg = self.config
        estimates = [s.bitrate_estimate for s in self._subscriptions[codec]
                     if s.bitrate_estimate is not None]
        target = min(estimates) if estimates else cfg.start_bitrate
        target = max(cfg.min_bitrate, min(cfg.max_bitrate, target))
        with self._lock:
            self._bitrate_targets[codec] = target

    def _deliver(self, frame: EncodedFrame) -> None:
        for sub in list(self._subscriptions[frame.codec]):
            sub._push(frame)

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # pipe full: the worker is already due to wake

    # -- worker thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            self._worker_loop()
        except BaseException as e:  # logged; the source stays closed for consumers
            self._worker_error = e
            logger.exception("%svideo worker crashed", self._log_prefix)
            with self._lock:
                pending = self._screenshot_requests
                self._screenshot_requests = []
            for fut in pending:
                fut.set_exception(MediaError(f"video worker crashed: {e}"))

    def _worker_loop(self) -> None:
        cfg = self.config
        capture = self._capture
        assert capture is not None and self._loop is not None
        converter = YuvConverter(cfg.width, cfg.height, threads=cfg.convert_threads,
                                 interpolation=cfg.convert_interpolation)
        encoders: dict[str, VideoEncoder] = {}
        budget = FrameBudget(cfg.fps)
        diff_mode = capture.damage != "xdamage"
        pending: list[Rect] = []
        need_full = True  # the converter has not seen the current picture
        refresh_at: float | None = None
        failures = 0

        while True:
            with self._lock:
                if self._stopping:
                    break
                codecs = sorted(c for c, n in self._codec_counts.items() if n > 0)
                shots = self._screenshot_requests
                self._screenshot_requests = []
                kf_requests = self._keyframe_requests & set(codecs)
                targets = dict(self._bitrate_targets)
            active = bool(codecs)
            self._sync_encoders(encoders, codecs, targets)

            rects = capture.poll_damage()
            if rects and active and not pending and cfg.damage_settle_s > 0:
                rects += self._settle(capture, cfg.damage_settle_s)
            now = time.monotonic()
            if not active:
                # Nobody watches: forget damage, re-grab everything later.
                pending.clear()
                need_full = True
                refresh_at = None
            elif rects:
                pending.extend(rects)
                refresh_at = now + cfg.refresh_delay_s

            refresh_due = refresh_at is not None and now >= refresh_at and not pending
            next_frame_at = budget.next_at(now)
            want_frame = active and now >= next_frame_at and (
                bool(pending) or need_full or bool(kf_requests) or refresh_due or diff_mode)

            if shots or want_frame:
                full_grab = need_full or refresh_due or bool(shots)
                try:
                    changed = self._frame_step(
                        capture, converter, encoders, shots, kf_requests, pending,
                        full_grab=full_grab, diff=diff_mode and not full_grab, now=now)
                except Exception as e:  # noqa: BLE001 - one bad grab must not end the stream
                    failures += 1
                    for fut in shots:
                        if not fut.done():
                            fut.set_exception(MediaError(f"frame failed: {e!r}"))
                    if failures >= MAX_FRAME_FAILURES:
                        raise
                    logger.warning("%sframe failed (%d in a row): %r", self._log_prefix,
                                   failures, e)
                    pending = []
                    need_full = True
                    budget.spend(now)
                    continue
                failures = 0
                with self._lock:
                    self._keyframe_requests -= kf_requests
                pending = []
                if active:
                    need_full = False
                    budget.spend(now)
                    if refresh_due:
                        refresh_at = None
                    elif changed and diff_mode:
                        refresh_at = now + cfg.refresh_delay_s
                continue

            # Sleep until something can happen: damage, a wake-up, the next slot.
            timeout: float | None = None
            if active:
                if pending or need_full or kf_requests or diff_mode:
                    timeout = max(0.0, next_frame_at - now)
                elif refresh_at is not None:
                    timeout = max(0.0, refresh_at - now)
            if capture.wait_damage(timeout, self._wake_r):
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass

        for enc in encoders.values():
            enc.close()

    def _settle(self, capture: ScreenCapture, settle_s: float) -> list[Rect]:
        """More damage of the same burst: until *settle_s* passes or none comes for 1 ms."""
        more: list[Rect] = []
        deadline = time.monotonic() + settle_s
        while (left := deadline - time.monotonic()) > 0:
            if capture.wait_damage(min(left, 0.001), self._wake_r):
                break  # a wake-up (subscriber, keyframe, stop): handle it now
            rects = capture.poll_damage()
            if not rects:
                break
            more += rects
        return more

    def _sync_encoders(self, encoders: dict[str, VideoEncoder], codecs: list[str],
                       targets: dict[str, int]) -> None:
        """Create encoders for codecs in use, drop the others, pass bitrate targets."""
        cfg = self.config
        for codec in list(encoders):
            if codec not in codecs:
                encoders.pop(codec).close()
                logger.info("%s%s encoder stopped (no subscribers)", self._log_prefix, codec)
        for codec in codecs:
            target = targets.get(codec, cfg.start_bitrate)
            if codec not in encoders:
                enc_cfg = dataclasses.replace(cfg.encoder, bitrate=target,
                                              keyframe_interval_s=cfg.keyframe_interval_s)
                encoders[codec] = create_encoder(codec, cfg.width, cfg.height, enc_cfg)
            encoders[codec].set_bitrate(target)

    def _frame_step(self, capture: ScreenCapture, converter: YuvConverter,
                    encoders: dict[str, VideoEncoder],
                    shots: list[concurrent.futures.Future[np.ndarray]],
                    kf_requests: set[str], pending: list[Rect], *, full_grab: bool, diff: bool,
                    now: float) -> bool:
        """Grab what changed, convert it, encode once per codec. True if pixels changed."""
        t_grab = time.perf_counter()
        changed: Rect | None
        if full_grab:
            changed = capture.grab(None)
        elif diff:
            changed = bounding_box(capture.diff_grab())
        else:
            box = bounding_box(pending)
            changed = capture.grab(box) if box is not None else None
        t_conv = time.perf_counter()
        if changed is not None or diff:
            self._frames_captured += 1
            self._grab_ms.add((t_conv - t_grab) * 1000)
        self._first_frame.set()
        for fut in shots:
            if not fut.cancelled():
                fut.set_result(capture.snapshot())
        if not encoders:
            return changed is not None
        if changed is not None:
            converter.update(capture.frame, capture.pixels, changed)
            self._convert_ms.add((time.perf_counter() - t_conv) * 1000)
        pts = max(int((now - self._t0) * 90000), self._last_pts + 1)
        self._last_pts = pts
        assert self._loop is not None
        for codec, enc in encoders.items():
            keyframe = codec in kf_requests
            if changed is None and not keyframe:
                continue
            t_enc = time.perf_counter()
            encoded = enc.encode(converter.frame, pts, keyframe=keyframe)
            self._encode_ms[codec].add((time.perf_counter() - t_enc) * 1000)
            if encoded is None:
                continue
            self._frames_encoded[codec] += 1
            self._bytes_encoded[codec] += len(encoded.data)
            self._loop.call_soon_threadsafe(self._deliver, encoded)
        return changed is not None


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
