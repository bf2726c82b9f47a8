"""A small WHEP client on aiortc for the end-to-end WebRTC tests.

:class:`WhepViewer` offers ``recvonly`` video (optionally restricted to one
codec) plus, if asked, the ``input`` data channel, posts the offer to the
gateway's WHEP endpoint and keeps decoded frames' sizes and arrival times.

aiortc's stock receiver completes a frame only when the next one starts, so
tests keep the screen changing (:class:`Typist`) while they wait for frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.gateway_fixtures import Gateway


@dataclass
class DecodedFrame:
    width: int
    height: int
    at: float
    """time.monotonic() when recv() returned it."""
    frame: av.VideoFrame


@dataclass
class WhepViewer:
    """One aiortc viewer of a session, connected through the gateway."""

    gw: Gateway
    sid: str
    token: str
    codec: str | None = "h264"
    """``"h264"``, ``"vp8"`` or None (offer everything aiortc has)."""
    with_input: bool = False
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    location: str | None = None
    answer_sdp: str = ""
    frames: list[DecodedFrame] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    keep_frames: int = 3
    """Keep the pixels of only the last N frames (memory)."""
    _channel: Any = None
    _channel_open: asyncio.Event = field(default_factory=asyncio.Event)
    _message_event: asyncio.Event = field(default_factory=asyncio.Event)
    _frame_event: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    offered_at: float = 0.0

    @property
    def whep_url(self) -> str:
        return self.gw.url(f"/api/visual-sessions/{self.sid}/whep")

    def _headers(self, content_type: str = "application/sdp") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}

    async def connect(self) -> None:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        if self.codec is not None:
            caps = RTCRtpReceiver.getCapabilities("video").codecs
            mime = {"h264": "video/h264", "vp8": "video/vp8"}[self.codec]
            prefs = [c for c in caps if c.mimeType.lower() == mime
                     and (self.codec != "h264"
                          or str(c.parameters.get("packetization-mode")) == "1")]
            transceiver.setCodecPreferences(prefs)
        if self.with_input:
            channel = self.pc.createDataChannel("input")
            self._channel = channel

            @channel.on("open")
            def on_open() -> None:
                self._channel_open.set()

            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                self.messages.append(json.loads(message))
                self._message_event.set()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offered_at = time.monotonic()
        async with self.gw.http.post(self.whep_url, data=self.pc.localDescription.sdp,
                                     headers=self._headers()) as resp:
            body = await resp.text()
            assert resp.status == 201, (resp.status, body)
            assert resp.content_type == "application/sdp", resp.content_type
            self.location = resp.headers["Location"]
            self.answer_sdp = body
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer_sdp, "answer"))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.VideoFrame)
            self.frames.append(DecodedFrame(frame.width, frame.height, time.monotonic(), frame))
            if len(self.frames) > self.keep_frames:
                # drop pixels of old frames, keep their sizes and times
                old = self.frames[-self.keep_frames - 1]
                old.frame = None  # type: ignore[assignment]
            self._frame_event.set()

    async def wait_frames(self, count: int, within: float = 20.0) -> list[DecodedFrame]:
        """Wait until *count* frames in total were decoded."""
        await wait_until(lambda: len(self.frames) >= count, within,
                         f"{count} decoded frames (got {len(self.frames)})")
        return self.frames

    async def wait_channel_open(self, within: float = 15.0) -> None:
        await asyncio.wait_for(self._channel_open.wait(), within)

    async def wait_message(self, predicate: Callable[[dict[str, Any]], bool],
                           within: float = 10.0, after: int = 0) -> dict[str, Any]:
        """The first message from index *after* on that matches *predicate*."""
        deadline = time.monotonic() + within
        while True:
            for message in self.messages[after:]:
                if predicate(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching data-channel message in {self.messages}")
            self._message_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._message_event.wait(), remaining)

    def send(self, message: dict[str, Any]) -> None:
        assert self._channel is not None, "viewer has no input channel"
        self._channel.send(json.dumps(message))

    async def delete(self) -> int:
        assert self.location is not None
        async with self.gw.http.delete(self.location,
                                       headers={"Authorization": f"Bearer {self.token}"}) as resp:
            return resp.status

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def wait_until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


class Typist:
    """Keeps the session's screen changing by typing into the xterm (agent actions)."""

    def __init__(self, gw: Gateway, sid: str, interval: float = 0.1) -> None:
        self.gw = gw
        self.sid = sid
        self.interval = interval
        self.typed = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        url = self.gw.url(f"/api/visual-sessions/{self.sid}/actions")
        while True:
            char = "abcdefghij"[self.typed % 10]
            with contextlib.suppress(aiohttp.ClientError):
                async with self.gw.http.post(url, json={"action": "type", "text": char},
                                             headers=self.gw.auth) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self.typed += 1
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Typist:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
