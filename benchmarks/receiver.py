"""The benchmarks' WebRTC viewer: an aiortc WHEP receiver that completes frames on
the RTP marker bit.

aiortc's stock jitter buffer hands a frame over only when the next one starts,
which adds a whole frame interval to every measurement; :class:`MarkerJitterBuffer`
completes a frame on its marker bit, as browsers do. :class:`Receiver` decodes
what arrives and stamps each picture (:class:`Seen`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
)
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket


class MarkerJitterBuffer(JitterBuffer):
    """Hands a frame to the decoder as soon as its marker-bit packet arrives.

    Packets of the frame must be contiguous from the first one after the
    previous frame; on a gap the frame waits for retransmission (NACK) like
    the stock buffer, and the stock path still completes it when the next
    frame starts.
    """

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is not None or not packet.marker or self._origin is None:
            return pli, frame
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            candidate = self._packets[(self._origin + count) % self.capacity]
            if candidate is None:
                return pli, None
            if candidate.timestamp != packet.timestamp:
                return pli, None  # an older, incomplete frame is still ahead
            packets.append(candidate)
            if candidate.sequence_number == packet.sequence_number:
                self.remove(count + 1)
                data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
                return pli, JitterFrame(data=data, timestamp=packet.timestamp)
        return pli, None


def use_marker_bit(receiver: RTCRtpReceiver) -> None:
    receiver._RTCRtpReceiver__jitter_buffer = MarkerJitterBuffer(  # type: ignore[attr-defined]
        capacity=512, is_video=True)


@dataclass
class Seen:
    at: float
    y: np.ndarray  # luma plane (height x width), a copy


class Receiver:
    """Decoded frames with arrival times; ``analyse`` runs on each (on the loop)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.transceiver = self.pc.addTransceiver("video", direction="recvonly")
        caps = RTCRtpReceiver.getCapabilities("video").codecs
        self.transceiver.setCodecPreferences(
            [c for c in caps if c.mimeType.lower() == "video/h264"
             and str(c.parameters.get("packetization-mode")) == "1"])
        use_marker_bit(self.transceiver.receiver)
        self.frames = 0
        self.analyse: Callable[[float, np.ndarray], None] = lambda at, y: None
        self._tasks: list[asyncio.Task[None]] = []
        self.first_frame = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - MediaStreamError at the end
                return
            at = time.monotonic()
            assert isinstance(frame, av.VideoFrame)
            plane = frame.planes[0]
            y = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(
                frame.height, plane.line_size)[:, :frame.width]
            self.frames += 1
            self.first_frame.set()
            self.analyse(at, y)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
