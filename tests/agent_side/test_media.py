"""VideoSource on a real Xvfb, fan-out, and real aiortc peers receiving it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci
from Xlib import display as xdisplay

from agent_side.encoder import EncodedFrame
from agent_side.media import MediaConfig, PacketSubscription, SubscriptionClosed, VideoSource
from agent_side.track import EncodedVideoTrack, attach_sender


class Painter:
    """Fills rectangles on the root window of a display (python-xlib)."""

    def __init__(self, name: str) -> None:
        self.display = xdisplay.Display(name)
        self.root = self.display.screen().root
        self.n = 0

    def fill(self, x: int, y: int, w: int, h: int, rgb: int) -> None:
        gc = self.root.create_gc(foreground=rgb)
        self.root.fill_rectangle(gc, x, y, w, h)
        gc.free()
        self.display.sync()

    def change(self) -> None:
        """A small, always-different change (a moving cursor-like block)."""
        self.n += 1
        self.fill((self.n * 23) % 1500, 100 + (self.n * 7) % 600, 40, 20,
                  (self.n * 0x3F1F7) & 0xFFFFFF)

    def close(self) -> None:
        self.display.close()


@pytest.fixture
async def source(xvfb) -> AsyncIterator[VideoSource]:  # type: ignore[no-untyped-def]
    src = VideoSource(MediaConfig(display=xvfb.name, width=xvfb.width, height=xvfb.height,
                                  refresh_delay_s=0.15))
    await src.start()
    yield src
    await src.aclose()
    await src.aclose()  # idempotent


@pytest.fixture
def painter(xvfb) -> Painter:  # type: ignore[no-untyped-def]
    p = Painter(xvfb.name)
    yield p  # type: ignore[misc]
    p.close()


async def poll(cond: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


def encoded(src: VideoSource, codec: str = "total") -> int:
    counts = src.stats["frames_encoded"]
    assert isinstance(counts, dict)
    return int(counts[codec])


async def drain(sub: PacketSubscription, until: float) -> list[av.Packet]:
    out: list[av.Packet] = []
    while time.monotonic() < until:
        try:
            out.append(await asyncio.wait_for(sub.get(), max(0.0, until - time.monotonic())))
        except TimeoutError:
            break
    return out


async def test_start_stats_and_screenshot(source: VideoSource, xvfb) -> None:  # type: ignore[no-untyped-def]
    assert await source.wait_first_frame(2.0)
    stats = source.stats
    assert stats["capture_backend"] == "xshm"
    assert stats["damage"] == "xdamage"
    assert stats["subscribers"] == 0
    png = await source.screenshot_png()
    assert png.startswith(b"\x89PNG")
    frame = next(iter(av.open(__import__("io").BytesIO(png)).decode(video=0)))
    assert (frame.width, frame.height) == (xvfb.width, xvfb.height)
    assert encoded(source) == 0, "no subscriber: nothing is encoded"


async def test_static_screen_then_change(source: VideoSource, painter: Painter, xvfb) -> None:  # type: ignore[no-untyped-def]
    sub = source.subscribe("h264", name="a")
    first = await asyncio.wait_for(sub.get(), 3)
    assert first.is_keyframe
    assert first.time_base.denominator == 90000 and first.pts is not None
    # Static: at most the first frame and one refresh, then silence.
    await asyncio.sleep(0.6)
    settled = encoded(source)
    assert settled <= 3
    await asyncio.sleep(0.5)
    assert encoded(source) == settled, "static screen must not be re-encoded"
    while sub.get_nowait() is not None:
        pass
    # A change produces packets that decode to full-size frames.
    dec = av.CodecContext.create("h264", "r")
    dec.decode(first)
    painter.change()
    pkts = await drain(sub, time.monotonic() + 0.6)
    assert pkts, "a change must produce packets"
    assert all(p.pts > first.pts for p in pkts)
    frames = [f for p in pkts for f in dec.decode(p)]
    assert frames and all((f.width, f.height) == (xvfb.width, xvfb.height) for f in frames)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await sub.get()


async def test_fanout_encodes_once_and_new_subscriber_gets_keyframe(
        source: VideoSource, painter: Painter) -> None:
    a = source.subscribe("h264", name="a")
    b = source.subscribe("h264", name="b")
    await poll(lambda: encoded(source) >= 1, what="first encode")
    await asyncio.sleep(0.4)  # let the refresh frame pass
    base = encoded(source)
    got_a = await drain(a, time.monotonic() + 0.05)
    got_b = await drain(b, time.monotonic() + 0.05)
    for _ in range(5):
        painter.change()
        await asyncio.sleep(0.05)
    await poll(lambda: encoded(source) >= base + 3, what="encodes after changes")
    got_a += await drain(a, time.monotonic() + 0.4)
    got_b += await drain(b, time.monotonic() + 0.1)
    assert [bytes(p) for p in got_a] == [bytes(p) for p in got_b]
    assert len(got_a) == encoded(source), "one encode per frame, shared by both"
    # A late subscriber starts with a keyframe even on a static screen.
    c = source.subscribe("h264", name="late")
    first = await asyncio.wait_for(c.get(), 3)
    assert first.is_keyframe


def test_slow_subscriber_drops_to_keyframe() -> None:
    class FakeSource:
        requests = 0

        def request_keyframe(self, codec: str | None = None) -> None:
            self.requests += 1

    fake = FakeSource()
    sub = PacketSubscription(fake, "h264", "slow", maxlen=3)  # type: ignore[arg-type]

    def frame(pts: int, key: bool) -> EncodedFrame:
        return EncodedFrame("h264", bytes([pts % 256]) * 10, pts, key)

    sub._push(frame(1, False))  # before any keyframe: dropped
    sub._push(frame(2, True))
    sub._push(frame(3, False))
    sub._push(frame(4, False))
    assert [p.pts for p in iter(sub.get_nowait, None)] == [2, 3, 4]
    for pts in range(5, 8):
        sub._push(frame(pts, pts == 5))
    sub._push(frame(8, False))  # overflow: drop all, wait for a keyframe
    assert sub.get_nowait() is None and fake.requests == 1
    sub._push(frame(9, False))
    assert sub.get_nowait() is None
    sub._push(frame(10, True))
    sub._push(frame(11, False))
    assert [p.pts for p in iter(sub.get_nowait, None)] == [10, 11]
    assert sub.dropped == 6


async def test_bitrate_estimate_is_min_clamped(source: VideoSource) -> None:
    a = source.subscribe("h264")
    b = source.subscribe("h264")
    source.set_bitrate_estimate(a, 5_000_000)
    source.set_bitrate_estimate(b, 100_000)
    assert source._bitrate_targets["h264"] == source.config.min_bitrate
    source.set_bitrate_estimate(b, None)
    assert source._bitrate_targets["h264"] == 5_000_000
    source.set_bitrate_estimate(a, 10**10)
    assert source._bitrate_targets["h264"] == source.config.max_bitrate


async def test_slow_consumer_does_not_block_fast_one(
        xvfb, painter: Painter) -> None:  # type: ignore[no-untyped-def]
    src = VideoSource(MediaConfig(display=xvfb.name, width=xvfb.width, height=xvfb.height,
                                  queue_frames=3))
    await src.start()
    try:
        slow = src.subscribe("h264", name="slow")
        fast = src.subscribe("h264", name="fast")
        got = 0
        deadline = time.monotonic() + 5
        while got < 12 and time.monotonic() < deadline:
            painter.change()
            got += len(await drain(fast, time.monotonic() + 0.04))
        assert got >= 12
        assert slow.dropped > 0
        # the slow one resumes at a keyframe
        pkts = []
        deadline = time.monotonic() + 3
        while not pkts and time.monotonic() < deadline:
            painter.change()
            pkts = await drain(slow, time.monotonic() + 0.05)
        assert pkts and pkts[0].is_keyframe
    finally:
        await src.aclose()


# -- end to end through aiortc ------------------------------------------------


async def _peer_pair(track: EncodedVideoTrack, mime: str) -> tuple[
        RTCPeerConnection, RTCPeerConnection, asyncio.Future[MediaStreamTrack], RTCRtpSender]:
    sender_pc = RTCPeerConnection()
    receiver_pc = RTCPeerConnection()
    remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @receiver_pc.on("track")
    def on_track(t: MediaStreamTrack) -> None:
        if not remote.done():
            remote.set_result(t)

    transceiver = sender_pc.addTransceiver(track, direction="sendonly")
    caps = RTCRtpSender.getCapabilities("video")
    transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType == mime])
    attach_sender(transceiver.sender, track)
    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(sender_pc.localDescription)
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(receiver_pc.localDescription)
    return sender_pc, receiver_pc, remote, transceiver.sender


@pytest.mark.parametrize("codec,mime", [("h264", "video/H264"), ("vp8", "video/VP8")])
async def test_aiortc_peer_receives_frames(
        source: VideoSource, painter: Painter, xvfb, codec: str, mime: str) -> None:  # type: ignore[no-untyped-def]
    track = EncodedVideoTrack(source.subscribe(codec, name=f"peer-{codec}"))
    sender_pc, receiver_pc, remote, _ = await _peer_pair(track, mime)
    try:
        received = await asyncio.wait_for(remote, 10)
        frames = []
        deadline = time.monotonic() + 15
        # the stock receiver completes a frame when the next one starts: keep changing
        while len(frames) < 3 and time.monotonic() < deadline:
            painter.change()
            try:
                frames.append(await asyncio.wait_for(received.recv(), 0.1))
            except TimeoutError:
                pass
        assert len(frames) >= 3
        assert all((f.width, f.height) == (xvfb.width, xvfb.height) for f in frames)
        counts = source.stats["frames_encoded"]
        assert isinstance(counts, dict) and counts[codec] >= 3
        assert counts["h264" if codec == "vp8" else "vp8"] == 0, "only the codec in use"
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    assert track.readyState == "ended"
    await poll(lambda: source.stats["subscribers"] == 0, what="track stop unsubscribes")


async def test_pli_and_remb_reach_shared_encoder(source: VideoSource) -> None:
    observer = source.subscribe("h264", name="observer")
    track = EncodedVideoTrack(source.subscribe("h264", name="peer"))
    sender_pc, receiver_pc, remote, sender = await _peer_pair(track, "video/H264")
    try:
        await asyncio.wait_for(remote, 10)
        await asyncio.sleep(0.4)  # initial keyframe + refresh pass
        await drain(observer, time.monotonic() + 0.05)
        # What the DTLS transport hands the sender for a PLI and a REMB:
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc)
        await sender._handle_rtcp_packet(pli)
        pkts = await drain(observer, time.monotonic() + 1.0)
        assert pkts and pkts[0].is_keyframe, "PLI must produce a keyframe on a static screen"
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                              fci=pack_remb_fci(2_000_000, [sender._ssrc]))
        await sender._handle_rtcp_packet(remb)
        assert track.subscription.bitrate_estimate == 2_000_000
        assert source._bitrate_targets["h264"] == 2_000_000
    finally:
        await sender_pc.close()
        await receiver_pc.close()
