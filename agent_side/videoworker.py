"""The capture→encode worker: one thread that grabs, converts and encodes.

Contract: :class:`CaptureEncodeWorker.run` is the body of ONE thread and the
only code that touches the :class:`~agent_side.capture.ScreenCapture`, the
:class:`~agent_side.encoder.YuvConverter` and the encoders. The event loop
talks to it only through the :class:`WorkerInbox` (a lock, a few sets and
dicts, a wake-up pipe) and receives each :class:`EncodedFrame` through
``deliver`` (scheduled with ``loop.call_soon_threadsafe``).

One turn of the loop:

1. read the inbox (codecs wanted, keyframe requests, bitrate targets,
   screenshots);
2. drain XDAMAGE (waiting ``damage_settle_s`` for the rest of a burst);
3. if a frame is due — damage pending and the :class:`~agent_side.governor.FrameBudget`
   allows one, a keyframe request, or a refinement due (see
   :mod:`agent_side.settle`) — grab what changed, convert it, encode it once
   per codec;
4. otherwise sleep on the X connection and the wake pipe until damage, a
   request, the next budget slot or the settle deadline.

Freshness over queueing: a frame is not captured while the previous one is
still waiting for the event loop; the worker waits and then grabs the newest
picture. The :class:`~agent_side.governor.Governor` sets the budget's rate from
each frame's CPU and wall time and from the deepest subscriber queue.
Once the screen is still, refinements (:mod:`agent_side.settle`) re-encode
what was encoded lossy at refine quality, so every viewer and the recording
converge on a near-lossless picture.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from .capture import Rect, ScreenCapture, bounding_box
from .encoder import CODECS, EncodedFrame, EncoderConfig, VideoEncoder, YuvConverter, create_encoder
from .governor import FrameBudget, Governor, GovernorConfig, RateMeter
from .settle import SettleTracker

__all__ = ["CaptureEncodeWorker", "RunningStat", "WorkerInbox", "WorkerSettings", "WorkerStats"]

logger = logging.getLogger(__name__)

MAX_FRAME_FAILURES = 10
"""Consecutive failed frames (grab/convert/encode) after which the worker gives up."""
DIFF_POLL_FPS = 30.0
"""Without XDAMAGE the screen is compared at most this often (a full grab each)."""


class WorkerInbox:
    """Requests from the event loop to the worker (guarded by :attr:`lock`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codec_counts: dict[str, int] = {}
        self.keyframe_requests: set[str] = set()
        self.bitrate_targets: dict[str, int] = {}
        self.screenshots: list[concurrent.futures.Future[np.ndarray]] = []
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def wake(self) -> None:
        """Make the worker look at the inbox now."""
        if self.wake_w >= 0:
            try:
                os.write(self.wake_w, b"x")
            except (BlockingIOError, OSError):
                pass  # pipe full (the worker is due to wake) or closed

    def drain_wakes(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        self.wake_r = self.wake_w = -1


class RunningStat:
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


class WorkerStats:
    """Written by the worker, read racily by stats (ints, floats, small dicts)."""

    def __init__(self) -> None:
        self.frames_captured = 0
        self.frames_encoded: dict[str, int] = {c: 0 for c in CODECS}
        self.bytes_encoded: dict[str, int] = {c: 0 for c in CODECS}
        self.grab_ms = RunningStat()
        self.convert_ms = RunningStat()
        self.encode_ms: dict[str, RunningStat] = {c: RunningStat() for c in CODECS}
        self.refinements = 0
        self.refine_bytes: dict[str, int] = {c: 0 for c in CODECS}
        self.keyframes = 0
        self.rate = RateMeter()
        self.governed_fps = 0.0
        self.governor: dict[str, float | str | None] = {}


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What the worker needs from the video source's configuration."""

    width: int
    height: int
    fps: int
    keyframe_interval_s: float
    refresh_delay_s: float
    refine_passes: int
    damage_settle_s: float
    start_bitrate: int
    convert_threads: int
    convert_interpolation: str | None
    encoder: EncoderConfig
    governor: GovernorConfig
    log_prefix: str = ""


class CaptureEncodeWorker:
    """The loop of the video thread (see the module docstring)."""

    def __init__(self, settings: WorkerSettings, capture: ScreenCapture, inbox: WorkerInbox,
                 deliver: Callable[[EncodedFrame, float], None],
                 schedule: Callable[[Callable[..., object], EncodedFrame, float], object],
                 backlog: Callable[[], int], first_frame: threading.Event) -> None:
        self.s = settings
        self.capture = capture
        self.inbox = inbox
        self.stats = WorkerStats()
        self._deliver = deliver
        self._schedule = schedule
        self._backlog = backlog
        self._first_frame = first_frame
        self._t0 = time.monotonic()
        self._last_pts = -1
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._waiting_for_loop = False
        self.encoders: dict[str, VideoEncoder] = {}

    # -- the loop ----------------------------------------------------------

    def run(self) -> None:  # noqa: C901 - the one place the frame decisions meet
        s, capture, inbox = self.s, self.capture, self.inbox
        converter = YuvConverter(s.width, s.height, threads=s.convert_threads,
                                 interpolation=s.convert_interpolation)
        start = time.monotonic()
        governor = Governor(s.governor, now=start)
        budget = FrameBudget(governor.rate(start), now=start)
        settle = self._settle_tracker()
        diff_mode = capture.damage != "xdamage"
        pending: list[Rect] = []
        need_full = True  # the converter has not seen the current picture
        failures = 0
        try:
            while True:
                with inbox.lock:
                    if inbox.stopping:
                        break
                    codecs = sorted(c for c, n in inbox.codec_counts.items() if n > 0)
                    shots, inbox.screenshots = inbox.screenshots, []
                    kf_requests = inbox.keyframe_requests & set(codecs)
                    targets = dict(inbox.bitrate_targets)
                active = bool(codecs)
                self._sync_encoders(codecs, targets)

                rects = capture.poll_damage()
                if rects and active and not pending and s.damage_settle_s > 0:
                    rects += self._settle_burst(s.damage_settle_s)
                now = time.monotonic()
                if not active:
                    # Nobody watches: forget damage, re-grab everything later.
                    pending.clear()
                    need_full = True
                    settle = self._settle_tracker()
                elif rects:
                    pending.extend(rects)
                    settle.changed(now)

                budget.set_rate(min(governor.rate(now), DIFF_POLL_FPS) if diff_mode
                                else governor.rate(now), now)
                refine_due = active and not pending and settle.due(now)
                next_frame_at = budget.next_at(now)
                want_frame = active and (bool(kf_requests) or need_full or refine_due or (
                    now >= next_frame_at and (bool(pending) or diff_mode)))
                if want_frame and self._in_flight > 0 and not shots:
                    # The previous frame still waits for the event loop: capture
                    # the newest picture once it is out, never queue behind it.
                    self._waiting_for_loop = True
                    self._wait(0.004)
                    self._waiting_for_loop = False
                    continue

                if shots or want_frame:
                    refine = refine_due and not kf_requests
                    full_grab = need_full
                    try:
                        changed = self._frame_step(
                            converter, shots, kf_requests, pending, settle,
                            full_grab=full_grab,
                            diff=(diff_mode or refine or bool(shots)) and not full_grab,
                            refine=refine, now=now, governor=governor)
                    except Exception as e:  # noqa: BLE001 - one bad grab must not end the stream
                        failures += 1
                        for fut in shots:
                            if not fut.done():
                                fut.set_exception(RuntimeError(f"frame failed: {e!r}"))
                        if failures >= MAX_FRAME_FAILURES:
                            raise
                        logger.warning("%sframe failed (%d in a row): %r", s.log_prefix,
                                       failures, e)
                        pending = []
                        need_full = True
                        budget.spend(now)
                        continue
                    failures = 0
                    with inbox.lock:
                        inbox.keyframe_requests -= kf_requests
                    pending = []
                    if active:
                        need_full = False
                        budget.spend(now)
                        if changed and diff_mode and not refine:
                            settle.changed(now)
                    continue

                # Sleep until something can happen: damage, a wake-up, the next slot.
                timeout: float | None = None
                if active:
                    if pending or diff_mode:
                        timeout = max(0.0, next_frame_at - now)
                    elif (due := settle.due_at()) is not None:
                        timeout = max(0.0, due - now)
                self._wait(timeout)
        finally:
            for enc in self.encoders.values():
                enc.close()
            self.encoders.clear()

    def _settle_tracker(self) -> SettleTracker:
        s = self.s
        return SettleTracker(s.refresh_delay_s, s.width, s.height, passes=s.refine_passes)

    def _wait(self, timeout: float | None) -> None:
        if self.capture.wait_damage(timeout, self.inbox.wake_r):
            self.inbox.drain_wakes()

    def _settle_burst(self, settle_s: float) -> list[Rect]:
        """More damage of the same burst: until *settle_s* passes or none comes for 1 ms."""
        more: list[Rect] = []
        deadline = time.monotonic() + settle_s
        while (left := deadline - time.monotonic()) > 0:
            if self.capture.wait_damage(min(left, 0.001), self.inbox.wake_r):
                break  # a wake-up (subscriber, keyframe, stop): handle it now
            rects = self.capture.poll_damage()
            if not rects:
                break
            more += rects
        return more

    def _sync_encoders(self, codecs: list[str], targets: dict[str, int]) -> None:
        """Create encoders for codecs in use, drop the others, pass bitrate targets."""
        s = self.s
        for codec in list(self.encoders):
            if codec not in codecs:
                self.encoders.pop(codec).close()
                logger.info("%s%s encoder stopped (no subscribers)", s.log_prefix, codec)
        for codec in codecs:
            target = targets.get(codec, s.start_bitrate)
            if codec not in self.encoders:
                enc_cfg = dataclasses.replace(s.encoder, bitrate=target,
                                              keyframe_interval_s=s.keyframe_interval_s)
                self.encoders[codec] = create_encoder(codec, s.width, s.height, enc_cfg)
            self.encoders[codec].set_bitrate(target)

    # -- one frame ---------------------------------------------------------

    def _frame_step(self, converter: YuvConverter,
                    shots: list[concurrent.futures.Future[np.ndarray]],
                    kf_requests: set[str], pending: list[Rect], settle: SettleTracker, *,
                    full_grab: bool, diff: bool, refine: bool, now: float,
                    governor: Governor) -> bool:
        """Grab what changed, convert it, encode once per codec. True if pixels changed."""
        capture, st = self.capture, self.stats
        cpu0, t_grab = time.thread_time(), time.perf_counter()
        changed: Rect | None
        if full_grab:
            changed = capture.grab(None)
        elif diff:
            # Without XDAMAGE, before every refinement and for screenshots: compare the
            # whole screen.
            # XDAMAGE can miss a change that lands between reading its events and
            # resetting the region; a refinement must not polish a stale picture.
            # A screenshot compares too, so it never costs an encode of an unchanged
            # screen (each would restart the refinement).
            changed = bounding_box(capture.diff_grab())
            if changed is not None and capture.damage == "xdamage":
                refine = False  # encode the missed change first; refine once it settles
                settle.changed(now)
        else:
            box = bounding_box(pending)
            changed = capture.grab_changed(box) if box is not None else None
        t_conv = time.perf_counter()
        if changed is not None or diff:
            st.frames_captured += 1
            st.grab_ms.add((t_conv - t_grab) * 1000)
        self._first_frame.set()
        for fut in shots:
            if not fut.cancelled():
                fut.set_result(capture.snapshot())
        if not self.encoders:
            return changed is not None
        if changed is not None:
            converter.update(capture.frame, capture.pixels, changed)
            st.convert_ms.add((time.perf_counter() - t_conv) * 1000)
        pts = max(int((now - self._t0) * 90000), self._last_pts + 1)
        self._last_pts = pts
        region = settle.dirty if refine else None
        any_encoded = False
        refine_complete = True
        for codec, enc in self.encoders.items():
            keyframe = codec in kf_requests
            if changed is None and not keyframe and not refine:
                continue
            t_enc = time.perf_counter()
            encoded = enc.encode(converter.frame, pts, keyframe=keyframe,
                                 refine=(region or changed) if refine else None)
            st.encode_ms[codec].add((time.perf_counter() - t_enc) * 1000)
            if encoded is None:
                continue
            any_encoded = True
            st.frames_encoded[codec] += 1
            st.bytes_encoded[codec] += len(encoded.data)
            st.keyframes += encoded.keyframe
            if refine:
                st.refine_bytes[codec] += len(encoded.data)
                # Held back by the VBV cap: the frame's base quantiser went up.
                if encoded.qp is not None and encoded.qp > self.s.encoder.refine_done_qp:
                    refine_complete = False
            else:
                settle.encoded_lossy(None if encoded.keyframe else changed, now)
            with self._in_flight_lock:
                self._in_flight += 1
            self._schedule(self._on_loop, encoded, time.monotonic())
        if refine and any_encoded:
            settle.refined(now, refine_complete)
            st.refinements += 1
        if any_encoded:
            st.rate.add(now)
            governor.frame_done(time.thread_time() - cpu0, time.perf_counter() - t_grab)
            governor.backlog(self._backlog(), now)
            st.governed_fps = governor.rate(now)
            st.governor = governor.snapshot()
        return changed is not None

    def _on_loop(self, frame: EncodedFrame, sent_at: float) -> None:
        """Event loop: hand the frame to the fan-out, then let the worker go on."""
        try:
            self._deliver(frame, sent_at)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
                wake = self._in_flight == 0 and self._waiting_for_loop
            if wake:
                self.inbox.wake()
