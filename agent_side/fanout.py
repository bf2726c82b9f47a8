"""Subscriptions to the encoded stream: one encode, copied to every consumer.

Contract (event-loop side only; nothing here blocks or runs on the worker):

* :class:`Fanout` keeps the :class:`PacketSubscription` objects of each codec,
  tells the capture→encode worker which codecs are wanted, forwards keyframe
  requests and aggregates bandwidth estimates into the encoder's cap (see
  *Bitrate policy*).
* :meth:`Fanout.deliver` runs on the event loop for every encoded frame and
  copies it into each subscription of its codec; it records the shallowest queue
  it saw (:attr:`Fanout.backlog`, read by the worker's governor) and how long
  the frame waited for the event loop (:attr:`Fanout.loop_lag_s`).
* A :class:`PacketSubscription` starts at a keyframe; when it falls
  ``maxlen`` frames behind, everything queued is dropped and it resumes at the
  next keyframe (one is requested).

Bitrate policy (one encoder serves every viewer, so whose bandwidth estimate
sets its cap is a choice; :data:`BITRATE_POLICIES`):

* ``steering`` (default): the cap is the minimum estimate of the subscriptions
  that *steer* the bitrate (WebRTC peers whose token may take control: control
  and API tokens), clamped to ``[min_bitrate, max_bitrate]``; with none, the
  start bitrate. A subscription that does not steer (a view-only peer) and
  reports less than the cap is *paced* instead: it gets frames while a byte
  budget at its own estimate (never below ``min_bitrate``) allows, keyframes
  always, and after a dropped frame nothing until the next keyframe (the
  periodic one: it asks for none).
  One watcher on a poor or lying link gets fewer frames; the others keep
  their picture.
* ``min``: the minimum estimate over every subscription (each viewer's link
  bounds everyone's quality; no pacing). For a trusted audience on one network.

Exceptions: :class:`MediaError` (base of the video source's errors),
:class:`SubscriptionClosed`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Protocol

import av

from wire.agent_api import BITRATE_POLICIES

from .encoder import CODECS, EncodedFrame
from .errors import AgentSideError
from .videoworker import WorkerInbox

__all__ = ["BITRATE_POLICIES", "Fanout", "MediaError", "PacketSubscription",
           "SubscriptionClosed"]

PACE_BURST_S = 1.0
"""A paced subscription may run this many seconds of its estimate ahead."""

logger = logging.getLogger(__name__)


class MediaError(AgentSideError):
    """Base class of video source errors."""


class SubscriptionClosed(MediaError):
    """The subscription (or its source) was closed."""


class SubscriptionOwner(Protocol):
    """What a subscription needs from whoever created it."""

    def request_keyframe(self, codec: str | None = None, group: str | None = None) -> None: ...

    def set_bitrate_estimate(self, subscription: PacketSubscription, bps: int | None) -> None: ...

    def _unsubscribe(self, subscription: PacketSubscription) -> None: ...


class PacketSubscription:
    """One consumer's view of the encoded stream of one codec."""

    def __init__(self, source: SubscriptionOwner, codec: str, name: str, maxlen: int,
                 steers_bitrate: bool = True) -> None:
        self.codec = codec
        self.name = name
        self.steers_bitrate = steers_bitrate
        """Whether this consumer's estimate may lower the shared encoder's cap (policy
        ``steering``); one that does not is paced at its estimate instead."""
        self.keyframe_group: str | None = None
        """Its keyframe requests are rate-limited with the others of this group (a view
        token's id; see :meth:`agent_side.media.VideoSource.request_keyframe`)."""
        self.pace_bps: int | None = None
        """Set by :meth:`Fanout.update_bitrate`: deliver at most this many bit/s."""
        self._pace_tokens = 0.0
        self._pace_at: float | None = None
        self._pace_skip = False
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
        self.paced_out = 0
        """Of those, frames dropped because they did not fit its pace."""

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Frames waiting to be taken."""
        return len(self._queue)

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
        if self.keyframe_group is None:
            self._source.request_keyframe(self.codec)
        else:
            self._source.request_keyframe(self.codec, group=self.keyframe_group)

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

    def _paced(self, frame: EncodedFrame, now: float) -> bool:
        """Whether *frame* does not fit this subscription's pace (and is to be dropped)."""
        if self.pace_bps is None:
            self._pace_at = None
            self._pace_skip = False
            return False
        rate = self.pace_bps / 8
        if self._pace_at is None:
            self._pace_tokens = rate * PACE_BURST_S
        else:
            self._pace_tokens = min(rate * PACE_BURST_S,
                                    self._pace_tokens + (now - self._pace_at) * rate)
        self._pace_at = now
        if frame.keyframe:  # a resync point: always sent, may overdraw the budget
            self._pace_skip = False
        elif self._pace_skip or self._pace_tokens < len(frame.data):
            self._pace_skip = True  # the next frames depend on this one: to the next keyframe
            return True
        self._pace_tokens -= len(frame.data)
        return False

    def _push(self, frame: EncodedFrame) -> None:
        """Called on the event loop for every encoded frame of this codec."""
        if self._closed:
            return
        if self._paced(frame, time.monotonic()):
            self.dropped += 1
            self.paced_out += 1
            return
        self._enqueue(frame)

    def _enqueue(self, frame: EncodedFrame) -> None:
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
            self.request_keyframe()
            return
        if frame.keyframe and len(self._queue) >= self._maxlen:
            self.dropped += len(self._queue)
            self._queue.clear()
        self._queue.append(frame)
        self._wake()


class Fanout:
    """The subscriptions of one video source, by codec."""

    def __init__(self, inbox: WorkerInbox, *, queue_frames: int, min_bitrate: int,
                 max_bitrate: int, start_bitrate: int, log_prefix: str = "",
                 bitrate_policy: str = "steering") -> None:
        if bitrate_policy not in BITRATE_POLICIES:
            raise ValueError(f"bitrate_policy must be one of {BITRATE_POLICIES}, "
                             f"not {bitrate_policy!r}")
        self.bitrate_policy = bitrate_policy
        self._inbox = inbox
        self._queue_frames = queue_frames
        self._min_bitrate = min_bitrate
        self._max_bitrate = max_bitrate
        self._start_bitrate = start_bitrate
        self._log_prefix = log_prefix
        self._subscriptions: dict[str, list[PacketSubscription]] = {c: [] for c in CODECS}
        self.backlog = 0
        """Shallowest queue of the subscribers seen by the last :meth:`deliver` (frames;
        those waiting for a keyframe aside)."""
        self.loop_lag_s = 0.0
        """How long the last frame waited between the worker and the event loop."""

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

    def subscribe(self, owner: SubscriptionOwner, codec: str, name: str,
                  steers_bitrate: bool = True) -> PacketSubscription:
        """A new subscription of *codec*; the worker starts encoding it with a keyframe."""
        sub = PacketSubscription(owner, codec, name, self._queue_frames, steers_bitrate)
        self._subscriptions[codec].append(sub)
        with self._inbox.lock:
            self._inbox.codec_counts[codec] = self._inbox.codec_counts.get(codec, 0) + 1
            self._inbox.keyframe_requests.add(codec)
        self.update_bitrate(codec)
        logger.info("%ssubscriber %r joined (%s, %d total)", self._log_prefix, name, codec,
                    self.count)
        self._inbox.wake()
        return sub

    def unsubscribe(self, sub: PacketSubscription) -> None:
        subs = self._subscriptions[sub.codec]
        if sub not in subs:
            return
        subs.remove(sub)
        with self._inbox.lock:
            self._inbox.codec_counts[sub.codec] -= 1
            if self._inbox.codec_counts[sub.codec] <= 0:
                del self._inbox.codec_counts[sub.codec]
        self.update_bitrate(sub.codec)
        logger.info("%ssubscriber %r left (%d remain)", self._log_prefix, sub.name, self.count)
        self._inbox.wake()

    def update_bitrate(self, codec: str) -> None:
        """Recompute *codec*'s encoder cap from its consumers' estimates (and who is
        paced; see *Bitrate policy* in the module docstring)."""
        subs = self._subscriptions[codec]
        everyone = self.bitrate_policy == "min"
        estimates = [s.bitrate_estimate for s in subs if s.bitrate_estimate is not None
                     and (everyone or s.steers_bitrate)]
        target = min(estimates) if estimates else self._start_bitrate
        target = max(self._min_bitrate, min(self._max_bitrate, target))
        for s in subs:
            # Never below the encoder's floor: an estimator on a quiet screen reports
            # about what it receives, so a low estimate is often no poor link.
            pace = max(self._min_bitrate, s.bitrate_estimate or 0)
            s.pace_bps = (pace if not everyone and not s.steers_bitrate
                          and s.bitrate_estimate is not None and pace < target else None)
        with self._inbox.lock:
            self._inbox.bitrate_targets[codec] = target

    def deliver(self, frame: EncodedFrame, sent_at: float) -> None:
        """Event loop: copy *frame* (handed over at monotonic *sent_at*) to its subscribers."""
        self.loop_lag_s = time.monotonic() - sent_at
        subs = self._subscriptions[frame.codec]
        # The shallowest queue: all behind means the event loop cannot deliver this
        # rate (the governor lowers it); one behind is that consumer's problem (it drops
        # to its next keyframe), and must not lower everyone's frame rate.
        self.backlog = min((s.queued for s in subs if not s._need_keyframe), default=0)
        for sub in list(subs):
            sub._push(frame)

    def close_all(self) -> None:
        for subs in self._subscriptions.values():
            for sub in list(subs):
                sub.close()
