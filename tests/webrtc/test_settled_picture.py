"""Refine on settle, end to end: after text stops scrolling, every viewer and the
recording show a near-lossless picture.

A real gateway (local backend) runs a 1600x900 session whose xterm scrolls a
few hundred lines of text, then stops. An aiortc WHEP viewer (its jitter
buffer completes frames on the RTP marker bit, as browsers do; the stock one
holds the last frame until the next starts) and a WebSocket viewer decoding
the stream with PyAV watch it; the session records. Once the screen is still,
the last picture each of them decoded, and the last frame of the recording,
must reach >= 45 dB PSNR (luma) against ``GET .../screenshot``. Before the
refinement existed they stayed at the last lossy frame of the scroll (about
20-35 dB here: smudged text).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from benchmarks.receiver import use_marker_bit
from tests.gateway_fixtures import Gateway, in_process_gateway
from tests.recording.helpers import act
from tests.webrtc.whep_client import WhepViewer

MIN_PSNR_DB = 45.0
SCROLL_COMMAND = ('for i in $(seq 1 500); do echo "$i: the quick brown fox jumps over the lazy '
                  'dog, 0123456789 {[(<>)]} ~@#%^&*"; sleep 0.01; done')


@pytest.fixture
async def xterm_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",)):
        yield gw


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane of *frame*; RGB goes through the agent's conversion (a fresh frame
    from the pixels: the PNG decoder's full-range tag would give full-range luma)."""
    yuv = frame
    if frame.format.name != "yuv420p":
        rgb = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
        yuv = rgb.reformat(format="yuv420p")
    plane = yuv.planes[0]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(yuv.height, plane.line_size)
    return rows[:, :yuv.width].astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return 100.0 if mse == 0 else 10 * float(np.log10(255 * 255 / mse))


async def screenshot(gw: Gateway, sid: str) -> np.ndarray:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        png = await resp.read()
    with av.open(io.BytesIO(png), "r") as container:
        return luma(next(container.decode(video=0)))


class WsViewer:
    """The WebSocket transport, decoded with PyAV: keeps the last decoded picture."""

    def __init__(self, gw: Gateway, sid: str, token: str) -> None:
        self.url = gw.url(f"/sessions/{sid}/stream?token={token}")
        self.http = gw.http
        self.decoder = av.CodecContext.create("h264", "r")
        self.last: av.VideoFrame | None = None
        self.frames = 0
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def start(self) -> None:
        self._ws = await self.http.ws_connect(self.url)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.BINARY or msg.data[0] != 1:
                continue
            for frame in self.decoder.decode(av.Packet(msg.data[12:])):
                self.last = frame
                self.frames += 1

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def marker_bit_viewer(gw: Gateway, sid: str, token: str) -> WhepViewer:
    viewer = WhepViewer(gw, sid, token, codec="h264")
    add = viewer.pc.addTransceiver

    def add_with_marker_bit(*args: Any, **kwargs: Any) -> Any:
        transceiver = add(*args, **kwargs)
        use_marker_bit(transceiver.receiver)
        # No REMB from this viewer (like a client that only does transport-cc, which
        # aiortc ignores): on this loaded machine aiortc's estimator reports the floor,
        # 1.5 Mbit/s, and at that cap x264 ultrafast skips the refinement's residual
        # (a known limit, docs/operations.md); this test is about the refinement
        # reaching every transport at the default cap.
        transceiver.receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
        return transceiver

    viewer.pc.addTransceiver = add_with_marker_bit  # type: ignore[method-assign]
    return viewer


async def wait_still(gw: Gateway, sid: str, within: float = 60.0) -> None:
    """Until two screenshots 0.5 s apart are identical (the scroll ended)."""
    deadline = time.monotonic() + within
    previous = await screenshot(gw, sid)
    while True:
        await asyncio.sleep(0.5)
        current = await screenshot(gw, sid)
        if np.array_equal(previous, current):
            return
        assert time.monotonic() < deadline, "the screen never became still"
        previous = current


def last_recorded_luma(path: Path) -> np.ndarray:
    last = None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            last = frame
    assert last is not None, "the recording holds no frame"
    return luma(last)


@pytest.mark.timeout(240)
async def test_settled_picture_is_near_lossless_on_every_transport_and_the_recording(
        xterm_gateway: Gateway) -> None:
    gw = xterm_gateway
    session = await gw.create_running(resolution="1600x900")
    sid, view = session["session_id"], session["tokens"]["view"]
    rtc = marker_bit_viewer(gw, sid, view)
    ws = WsViewer(gw, sid, view)
    try:
        await rtc.connect()
        await ws.start()
        await rtc.wait_frames(1, within=30)
        await act(gw, sid, {"action": "type", "text": SCROLL_COMMAND})
        await act(gw, sid, {"action": "key", "text": "Return"})
        # The scroll must really run through the viewers (many lossy frames).
        frames_before = ws.frames
        await asyncio.sleep(1.0)
        await wait_still(gw, sid)
        assert ws.frames - frames_before >= 10, (
            f"the scroll produced too few frames ({ws.frames - frames_before})")
        # Converge: the refinement's passes wait for the bitrate cap's buffer, and
        # aiortc's receiver reports a low estimate (REMB), so this is not timed here
        # (benchmarks/page_content.py measures the 0.5 s target); a deadline only
        # bounds the wait.
        got: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while True:
            await asyncio.sleep(0.5)
            truth = await screenshot(gw, sid)
            assert rtc.frames and rtc.frames[-1].frame is not None and ws.last is not None
            got = {"webrtc": psnr(luma(rtc.frames[-1].frame), truth),
                   "ws": psnr(luma(ws.last), truth)}
            if min(got.values()) >= MIN_PSNR_DB or time.monotonic() > deadline:
                break
        # The frame rate and the refinements reach /metrics (the gateway polls agent stats).
        metrics = ""
        deadline = time.monotonic() + 15
        while f'visual_runtime_refinements_total{{session="{sid}"}}' not in metrics:
            assert time.monotonic() < deadline, metrics[-2000:]
            await asyncio.sleep(0.3)
            async with gw.http.get(gw.url("/metrics"), headers=gw.auth) as resp:
                metrics = await resp.text()
        assert f'visual_runtime_frame_rate{{session="{sid}",kind="cap"}} 60' in metrics
        refined = [line for line in metrics.splitlines()
                   if line.startswith(f'visual_runtime_refinements_total{{session="{sid}"}}')]
        assert float(refined[0].split()[-1]) >= 1
    finally:
        await ws.close()
        await rtc.close()
    stopped = await gw.stop(sid)
    assert stopped["status"] == "stopped"
    recording = gw.state_dir / "sessions" / sid / "recording" / "recording.mp4"
    got["recording"] = psnr(last_recorded_luma(recording), truth)
    print("settled picture PSNR (Y) against the screenshot:",
          {k: round(v, 2) for k, v in got.items()})
    assert all(v >= MIN_PSNR_DB for v in got.values()), got
