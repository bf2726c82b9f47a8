"""The shared encoder's bitrate policy and keyframe-request merging (issue 21).

Unit tests of :class:`agent_side.fanout.Fanout` and :class:`PacketSubscription`
(a real :class:`WorkerInbox`, no worker), and of
:meth:`agent_side.media.VideoSource.request_keyframe` on a real Xvfb. The same
policy against real aiortc peers: ``tests/webrtc/test_remb_policy.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from agent_side.encoder import EncodedFrame
from agent_side.fanout import Fanout, PacketSubscription
from agent_side.media import MediaConfig, VideoSource
from agent_side.videoworker import WorkerInbox

MIN, START, MAX = 1_500_000, 8_000_000, 20_000_000


class Owner:
    def __init__(self) -> None:
        self.keyframes = 0
        self.fanout: Fanout | None = None

    def request_keyframe(self, codec: str | None = None) -> None:
        self.keyframes += 1

    def set_bitrate_estimate(self, subscription: PacketSubscription, bps: int | None) -> None:
        subscription.bitrate_estimate = bps
        assert self.fanout is not None
        self.fanout.update_bitrate(subscription.codec)

    def _unsubscribe(self, subscription: PacketSubscription) -> None:
        assert self.fanout is not None
        self.fanout.unsubscribe(subscription)


def make(policy: str) -> tuple[Fanout, Owner, WorkerInbox]:
    inbox = WorkerInbox()
    fanout = Fanout(inbox, queue_frames=30, min_bitrate=MIN, max_bitrate=MAX,
                    start_bitrate=START, bitrate_policy=policy)
    owner = Owner()
    owner.fanout = fanout
    return fanout, owner, inbox


def test_steering_policy_ignores_view_only_estimates_and_paces_them() -> None:
    fanout, owner, inbox = make("steering")
    viewer = fanout.subscribe(owner, "h264", "viewer", steers_bitrate=False)
    controller = fanout.subscribe(owner, "h264", "controller", steers_bitrate=True)
    viewer.set_bitrate_estimate(10_000)
    assert inbox.bitrate_targets["h264"] == START
    # paced at its estimate, but never below the encoder's floor
    assert viewer.pace_bps == MIN and controller.pace_bps is None
    viewer.set_bitrate_estimate(4_000_000)
    assert viewer.pace_bps == 4_000_000
    controller.set_bitrate_estimate(3_000_000)
    assert inbox.bitrate_targets["h264"] == 3_000_000
    # A view-only estimate above the cap needs no pacing.
    viewer.set_bitrate_estimate(5_000_000)
    assert viewer.pace_bps is None and inbox.bitrate_targets["h264"] == 3_000_000
    controller.close()
    assert inbox.bitrate_targets["h264"] == START


def test_min_policy_lets_every_estimate_lower_the_cap() -> None:
    fanout, owner, inbox = make("min")
    viewer = fanout.subscribe(owner, "h264", "viewer", steers_bitrate=False)
    viewer.set_bitrate_estimate(10_000)
    assert inbox.bitrate_targets["h264"] == MIN
    assert viewer.pace_bps is None


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="bitrate_policy"):
        make("max")


def test_a_paced_subscription_gets_keyframes_and_what_fits() -> None:
    _, owner, _ = make("steering")
    sub = PacketSubscription(owner, "h264", "paced", maxlen=100, steers_bitrate=False)
    sub.pace_bps = 80_000  # 10 kB/s, bursts of 10 kB

    def frame(pts: int, key: bool, size: int) -> EncodedFrame:
        return EncodedFrame("h264", b"\0" * size, pts, key)

    def push(f: EncodedFrame, now: float) -> bool:
        if sub._paced(f, now):
            return False
        sub._enqueue(f)
        return True

    assert push(frame(0, True, 50_000), 0.0)  # a keyframe overdraws the budget
    assert not push(frame(1, False, 1_000), 0.1)  # over budget: dropped...
    assert not push(frame(2, False, 10), 10.0)  # ...and every frame until a keyframe
    assert push(frame(3, True, 5_000), 10.1)
    assert push(frame(4, False, 4_000), 10.2)
    assert not push(frame(5, False, 4_000), 10.3)  # 10 kB burst spent
    assert [p.pts for p in iter(sub.get_nowait, None)] == [0, 3, 4]
    sub.pace_bps = None  # no longer paced: everything passes
    assert push(frame(6, False, 10**6), 10.4)


def test_one_slow_subscriber_is_no_backlog_for_the_governor() -> None:
    fanout, owner, _ = make("steering")
    slow = fanout.subscribe(owner, "h264", "slow")
    fast = fanout.subscribe(owner, "h264", "fast")

    def deliver(pts: int) -> None:
        fanout.deliver(EncodedFrame("h264", b"x", pts, pts == 0), time.monotonic())

    for pts in range(6):
        deliver(pts)
        assert fast.get_nowait() is not None
    assert slow.queued == 6 and fanout.backlog == 0
    for pts in range(6, 9):  # now both fall behind: the event loop cannot keep up
        deliver(pts)
    assert fanout.backlog == 2


@pytest.fixture
async def source(xvfb) -> AsyncIterator[VideoSource]:  # type: ignore[no-untyped-def]
    src = VideoSource(MediaConfig(display=xvfb.name, width=320, height=240,
                                  keyframe_min_gap_s=0.5))
    await src.start()
    try:
        yield src
    finally:
        await src.aclose()


async def test_keyframe_requests_are_merged_not_lost(source: VideoSource) -> None:
    inbox = source._inbox
    assert inbox is not None
    source.request_keyframe("h264")
    for _ in range(20):
        source.request_keyframe("h264")  # a PLI flood
    assert source.keyframe_requests_merged == 20
    with inbox.lock:
        inbox.keyframe_requests.clear()  # the worker took the first one
    await asyncio.sleep(0.7)  # the merged ones come back as one, at the end of the gap
    with inbox.lock:
        assert inbox.keyframe_requests == {"h264"}


async def test_a_view_tokens_keyframe_requests_have_a_budget_of_their_own(
        source: VideoSource) -> None:
    inbox = source._inbox
    assert inbox is not None and source.config.keyframe_token_gap_s == 2.0
    source.request_keyframe("h264", group="token:a")
    await asyncio.sleep(0.6)  # past the session-wide gap, inside token a's
    source.request_keyframe("h264", group="token:b")  # another token: goes on
    with inbox.lock:
        assert inbox.keyframe_requests == {"h264"}
        inbox.keyframe_requests.clear()
    source.request_keyframe("h264", group="token:a")  # token a again, 0.6 s later: waits
    assert source.keyframe_requests_merged == 1
    await asyncio.sleep(0.9)
    with inbox.lock:
        assert inbox.keyframe_requests == set()
    await asyncio.sleep(0.8)  # 2 s after token a's first request: its deferred one
    with inbox.lock:
        assert inbox.keyframe_requests == {"h264"}
