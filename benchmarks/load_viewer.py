"""The load benchmark's viewer: an aiortc WHEP viewer that stands in for a browser.

It decodes H.264, keeps frame arrival times, asks for a keyframe (PLI) when
packets arrive but nothing decodes, and counts RTP loss; :func:`stall_seconds`
says whether it starved while the encoder was producing frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from typing import Any
from urllib.parse import urljoin

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from visual_runtime_client.client import (
    ApiError,
)

logger = logging.getLogger(__name__)


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)



# ----------------------------------------------------------------- viewer
class Viewer:
    """One aiortc WHEP viewer of a session: decodes H.264 and keeps frame arrival times."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, sid: str, token: str,
                 rcvbuf_mb: int = 4) -> None:
        self.http = http
        self.rcvbuf_mb = rcvbuf_mb
        self.base_url = base_url
        self.sid = sid
        self.token = token
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.frame_times: list[float] = []
        self.offered_at = 0.0
        self.states: list[tuple[float, str]] = []
        self.rcvbuf_bytes: list[int] = []
        self.pair: str = ""
        self.plis = 0
        """Picture-loss requests this viewer sent on a decode stall (see :meth:`_watch`)."""
        """The nominated ICE pair, ``viewer-address -> agent-address`` (once connected)."""
        """SO_RCVBUF of each of this viewer's UDP sockets after growing them."""
        self.rtp: list[tuple[float, int, int]] = []

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            self.states.append((time.monotonic(), self.pc.connectionState))
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        capabilities = RTCRtpReceiver.getCapabilities("video")
        caps = capabilities.codecs if capabilities is not None else []
        transceiver.setCodecPreferences(
            [c for c in caps if c.mimeType.lower() == "video/h264"
             and str(c.parameters.get("packetization-mode")) == "1"])

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for coro in (self._consume(track), self._watch(transceiver.receiver)):
                task = asyncio.create_task(coro)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self.offered_at = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with self.http.post(
            f"{self.base_url}/api/visual-sessions/{self.sid}/whep",
            data=self.pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/sdp"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            body = await resp.read()
            if resp.status != 201:
                raise ApiError(resp.status, _problem(body))
            self.location = resp.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
        if self.rcvbuf_mb:
            self._grow_receive_buffers()

    def _grow_receive_buffers(self) -> None:
        """Give this viewer's UDP sockets a bigger receive buffer (``rcvbuf_mb``).

        A real viewer has a machine of its own; these ten share two cores with the
        sessions they watch, and a default-sized buffer (~200 kB) overflows when
        the test process is off the CPU for a moment. Sender-side stalls still
        show (``stall_s``), and drops are counted either way (:func:`udp_drops`).
        Reaches into aiortc's ICE transport (private attributes): best effort.
        """
        for transceiver in self.pc.getTransceivers():
            ice = getattr(transceiver.receiver.transport, "transport", None)
            connection = getattr(ice, "_connection", None)
            for protocol in getattr(connection, "_protocols", []):
                transport = getattr(protocol, "transport", None)
                sock = transport.get_extra_info("socket") if transport is not None else None
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE,
                                        self.rcvbuf_mb * 2**20)
                        self.rcvbuf_bytes.append(
                            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                self.frame_times.append(time.monotonic())

    def note_pair(self) -> None:
        """Remember the nominated ICE candidate pair (aioice internals; best effort)."""
        for transceiver in self.pc.getTransceivers():
            ice = getattr(transceiver.receiver.transport, "transport", None)
            connection = getattr(ice, "_connection", None)
            pair = (getattr(connection, "_nominated", None) or {}).get(1)
            if pair is not None:
                self.pair = (f"{pair.local_candidate.host}:{pair.local_candidate.port} -> "
                             f"{pair.remote_candidate.host}:{pair.remote_candidate.port}")

    async def sample_rtp(self) -> None:
        """Note the RTP packets received and lost so far (from ``getStats``)."""
        received = lost = 0
        with contextlib.suppress(Exception):  # a closing peer may fail its stats
            report = await self.pc.getStats()
            for stats in report.values():
                if getattr(stats, "type", "") == "inbound-rtp":
                    received += int(getattr(stats, "packetsReceived", 0) or 0)
                    lost += int(getattr(stats, "packetsLost", 0) or 0)
        self.rtp.append((time.monotonic(), received, lost))

    async def _watch(self, receiver: RTCRtpReceiver, every: float = 0.5,
                     stall: float = 1.0) -> None:
        """Send a PLI when packets keep arriving but no frame decodes for *stall* s.

        aiortc's stock receiver asks for a keyframe only when its 128-packet jitter
        buffer overflows after an unrecovered loss: at the few packets per second
        of a desktop stream that is 10-20 s without a picture. Browsers ask at once;
        so does this viewer (once per *stall* s at most).
        """
        seen_frames, base, last_pli = 0, 0, 0.0
        while True:
            await asyncio.sleep(every)
            received, ssrc = 0, None
            with contextlib.suppress(Exception):  # a closing peer may fail its stats
                for stats in (await self.pc.getStats()).values():
                    if getattr(stats, "type", "") == "inbound-rtp":
                        received += int(getattr(stats, "packetsReceived", 0) or 0)
                        ssrc = getattr(stats, "ssrc", None)
            now = time.monotonic()
            if len(self.frame_times) != seen_frames:
                seen_frames, base = len(self.frame_times), received
                continue
            last_frame = self.frame_times[-1] if self.frame_times else self.offered_at
            if (ssrc is not None and received > base and now - last_frame > stall
                    and now - last_pli > stall):
                with contextlib.suppress(Exception):
                    await receiver._send_rtcp_pli(int(ssrc))
                    self.plis += 1
                    last_pli = now

    async def wait_frames(self, count: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while len(self.frame_times) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def delete(self) -> int | None:
        if self.location is None:
            return None
        async with self.http.delete(urljoin(self.base_url, self.location),
                                    headers={"Authorization": f"Bearer {self.token}"},
                                    timeout=aiohttp.ClientTimeout(total=30)) as resp:
            await resp.read()
            return resp.status

    async def close(self) -> None:
        await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _problem(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {"detail": body[:200].decode(errors="replace")}
    return data if isinstance(data, dict) else {"detail": str(data)[:200]}


def count_at(series: list[tuple[float, int]], at: float) -> int:
    """The last sampled value at or before *at* (the first one before any sample)."""
    value = series[0][1] if series else 0
    for t, n in series:
        if t > at:
            break
        value = n
    return value


def stall_seconds(frames: list[float], encoded: list[tuple[float, int]], start: float,
                  end: float, lag_s: float = 2.5) -> float:
    """Longest gap between decoded frames (window edges included) during which the
    session's encoder produced at least two frames.

    The screen is captured on damage only, so a gap with nothing encoded is a still
    screen (e.g. Chromium slow to repaint), not a starving viewer. The encoder's
    count comes from ``/metrics`` (refreshed every poll interval, sampled every
    second), so it is read *lag_s* after the gap opens and 0.5 s before it closes;
    two frames, because the last frame before a pause is completed by aiortc's
    stock receiver only when the next one arrives.
    """
    inside = [t for t in frames if start <= t <= end]
    points = [start, *inside, end]
    worst = 0.0
    for a, b in zip(points, points[1:], strict=False):
        if b - a <= worst:
            continue
        if count_at(encoded, b - 0.5) - count_at(encoded, a + lag_s) >= 2:
            worst = b - a
    return worst


def parse_encoded(metrics_text: str) -> dict[str, int]:
    """``visual_runtime_frames_encoded_total`` by session id."""
    found = {}
    for m in re.finditer(r'^visual_runtime_frames_encoded_total\{session="([^"]+)"\} (\S+)$',
                         metrics_text, re.M):
        found[m.group(1)] = int(float(m.group(2)))
    return found


def frame_stats(times: list[float], start: float, end: float) -> tuple[int, float]:
    """Frames inside [start, end] and the longest stretch without one (edges included)."""
    inside = [t for t in times if start <= t <= end]
    points = [start, *inside, end]
    gap = max(b - a for a, b in zip(points, points[1:], strict=False))
    return len(inside), gap
