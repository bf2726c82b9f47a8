"""The glass-to-glass baseline: a naive sender that encodes the screen on a fixed
30 fps tick, in this process, to the same receiver.

It is what a straightforward capture loop does (grab, convert and encode every
tick, whether or not anything changed); the benchmark compares our damage-driven
pipeline with it in the same run.
"""

from __future__ import annotations

import asyncio
import threading
import time

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
)

from agent_side.encoder import EncoderConfig, YuvConverter, create_encoder  # noqa: E402
from benchmarks.harness import stat_cpu_seconds
from benchmarks.receiver import Receiver


class TickTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.Packet] = asyncio.Queue(maxsize=30)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        return await self.queue.get()


class TickSender:
    """The prototype: grab + convert + encode every 1/30 s, whatever changed."""

    def __init__(self, display_name: str, loop: asyncio.AbstractEventLoop, width: int,
                 height: int) -> None:
        import mss

        self.width, self.height = width, height
        self.bytes_sent = 0
        self.sct = mss.MSS(display=display_name)
        self.track = TickTrack()
        self.loop = loop
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tick-sender", daemon=True)
        self.cpu = 0.0
        self.tid = 0

    def cpu_seconds(self) -> float:
        """CPU time of the sender thread so far (from /proc, readable from any thread)."""
        if not self.tid:
            return 0.0
        return stat_cpu_seconds(f"/proc/self/task/{self.tid}/stat")

    def _run(self) -> None:
        width, height = self.width, self.height
        converter = YuvConverter(width, height, threads=1)
        encoder = create_encoder("h264", width, height, EncoderConfig(bitrate=8_000_000))
        bgra = av.VideoFrame(width, height, "bgra")
        pixels = np.frombuffer(memoryview(bgra.planes[0]), dtype=np.uint8).reshape(
            height, bgra.planes[0].line_size)[:, :width * 4].reshape(height, width, 4)
        interval = 1 / 30
        next_at = time.monotonic()
        t_start = time.thread_time()
        self.tid = threading.get_native_id()
        t_origin = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
                continue
            next_at += interval
            shot = self.sct.grab({"left": 0, "top": 0, "width": width, "height": height})
            pixels[:] = np.frombuffer(shot.raw, dtype=np.uint8).reshape(height, width, 4)
            converter.update(bgra, pixels, None)
            pts = int((time.monotonic() - t_origin) * 90000)
            encoded = encoder.encode(converter.frame, pts)
            if encoded is not None:
                packet = encoded.to_packet()
                self.bytes_sent += packet.size

                def put(p: av.Packet = packet) -> None:
                    if not self.track.queue.full():
                        self.track.queue.put_nowait(p)
                self.loop.call_soon_threadsafe(put)
        self.cpu = time.thread_time() - t_start
        encoder.close()

    async def connect(self, receiver: Receiver) -> RTCPeerConnection:
        pc = RTCPeerConnection()
        transceiver = pc.addTransceiver(self.track, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences(
            [c for c in caps if c.mimeType.lower() == "video/h264"
             and str(c.parameters.get("packetization-mode")) == "1"])
        await receiver.pc.setLocalDescription(await receiver.pc.createOffer())
        await pc.setRemoteDescription(receiver.pc.localDescription)
        await pc.setLocalDescription(await pc.createAnswer())
        await receiver.pc.setRemoteDescription(pc.localDescription)
        self.thread.start()
        return pc

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sct.close()
