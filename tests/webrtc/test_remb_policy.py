"""One viewer's bandwidth estimate (REMB) against the shared encoder (issue 21).

A real runtime agent (``python -m agent_side``) on a real Xvfb whose screen shows
changing noise (so the encoder's bitrate cap binds), and real aiortc peers that
decode what they get. The attacker's peer sends the RTCP REMB packet aiortc's own
receiver sends (``RtcpPsfbPacket`` with ``pack_remb_fci``, ``RTCRtpReceiver.
_handle_rtp_packet``), claiming 10 kbit/s, every 0.2 s.

* Default policy (``steering``): a view token's REMB leaves the encoder's cap and
  the other viewer's received bitrate as they were; the liar itself is paced (it
  gets keyframes and what fits its budget, fewer frames, still frames). A control
  token's REMB, the control case, lowers the cap and the other viewer's bitrate.
* Policy ``min``: a view token's REMB lowers the cap (the old behaviour, kept as a
  setting for a trusted audience); the gateway's ``--bitrate-policy`` reaches the
  runtime agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci
from Xlib import X
from Xlib import display as xdisplay

from gateway.appkeys import MANAGER
from gateway.config import GatewayConfig
from tests.conftest import XDisplay, start_xvfb, stop_xvfb
from tests.gateway_fixtures import in_process_gateway
from tests.security.agent_process import (
    AgentProcess,
    DirectViewer,
    start_agent,
    stop_agent,
    wait_stats,
)

pytestmark = pytest.mark.timeout(180)

SIZE = (800, 600)
NOISE = (320, 240)
START_BITRATE, MIN_BITRATE = 8_000_000, 1_500_000  # agent_side.media.MediaConfig
LIE_BPS = 10_000


class NoisePainter:
    """Random pixels in a 320x240 area, 15 times a second: hard to compress, so the
    encoder's bitrate cap decides how many bytes a viewer gets."""

    def __init__(self, display: str) -> None:
        self.display = xdisplay.Display(display)
        self.root = self.display.screen().root
        self.gc = self.root.create_gc()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        w, h = NOISE
        strip = 60  # rows per request: an X request holds at most 256 KiB
        while True:
            for y in range(0, h, strip):
                self.root.put_image(self.gc, 100, 100 + y, w, strip, X.ZPixmap, 24, 0,
                                    os.urandom(w * strip * 4))
            self.display.sync()
            await asyncio.sleep(1 / 15)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.display.close()


@pytest.fixture
async def noisy_screen() -> AsyncIterator[XDisplay]:
    display = start_xvfb(*SIZE)
    painter = NoisePainter(display.name)
    painter.start()
    try:
        yield display
    finally:
        await painter.stop()
        stop_xvfb(display)


async def bytes_received(pc: RTCPeerConnection) -> int:
    """Bytes the peer's DTLS transport received (aiortc counts no RTP bytes by stream)."""
    total = 0
    for stats in (await pc.getStats()).values():
        if getattr(stats, "type", "") == "transport":
            total += int(stats.bytesReceived)
    return total


async def send_remb(pc: RTCPeerConnection, bps: int) -> bool:
    """One REMB for the video stream, as aiortc's receiver builds it; False before the
    first RTP packet (the media SSRC is not known yet)."""
    receiver = pc.getTransceivers()[0].receiver
    rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
    ssrcs = [int(s.ssrc) for s in (await pc.getStats()).values()
             if getattr(s, "type", "") == "inbound-rtp"]
    if rtcp_ssrc is None or not ssrcs:
        return False
    await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                                             fci=pack_remb_fci(bps, ssrcs)))
    return True


class Liar:
    """Sends a 10 kbit/s REMB from *viewer* every 0.2 s until stopped."""

    def __init__(self, viewer: DirectViewer) -> None:
        self.viewer = viewer
        self.sent = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            if await send_remb(self.viewer.pc, LIE_BPS):
                self.sent += 1
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def cap(stats: dict[str, Any]) -> int:
    return int(stats["media"]["bitrate"]["cap"]["h264"])


def peer_of(stats: dict[str, Any], token_kind: str) -> dict[str, Any]:
    [peer] = [p for p in stats["peers"] if p["token_kind"] == token_kind]
    return peer


async def watch(agent: AgentProcess, honest: DirectViewer, seconds: float
                ) -> tuple[float, set[int], int]:
    """The honest viewer's received bit/s over *seconds*, the caps seen meanwhile (every
    0.25 s) and the frames it decoded."""
    caps: set[int] = set()
    b0, f0, t0 = await bytes_received(honest.pc), honest.frames, time.monotonic()
    while time.monotonic() - t0 < seconds:
        caps.add(cap(await agent.stats()))
        await asyncio.sleep(0.25)
    rate = (await bytes_received(honest.pc) - b0) * 8 / (time.monotonic() - t0)
    return rate, caps, honest.frames - f0


async def test_a_view_tokens_remb_is_paced_not_shared(noisy_screen: XDisplay,
                                                      tmp_path: Path) -> None:
    agent = await start_agent(noisy_screen.name, SIZE, tmp_path)
    viewers: list[DirectViewer] = []
    try:
        honest = DirectViewer(agent, "honest")
        liar = DirectViewer(agent, "liar")
        viewers += [honest, liar]
        for v in viewers:
            assert await v.connect() == 201
        for v in viewers:
            await v.wait_more_frames(10)
        assert cap(await agent.stats()) == START_BITRATE

        # 1. A view token claims 10 kbit/s: the shared cap does not move.
        lie = Liar(liar)
        await wait_stats(agent, lambda s: any(p["bitrate_estimate"] == LIE_BPS
                                              and p["frames_paced_out"] for p in s["peers"]), 20,
                         "the liar's REMB to arrive and its frames to be paced")
        liar_frames = liar.frames
        view_rate, view_caps, honest_frames = await watch(agent, honest, 6.0)
        liar_frames = liar.frames - liar_frames
        stats = await agent.stats()
        assert lie.sent > 0
        assert view_caps == {START_BITRATE}, view_caps
        [paced] = [p for p in stats["peers"] if p["frames_paced_out"]]
        assert paced["steers_bitrate"] is False
        # The liar still gets pictures (keyframes and what fits), fewer than the others.
        assert 0 < liar_frames < honest_frames, (liar_frames, honest_frames)
        assert not [p for p in stats["peers"] if p["steers_bitrate"]]

        # 2. The control case: a control token's identical REMB lowers the cap, and
        #    with it what the honest viewer receives.
        controller = DirectViewer(agent, "controller", kind="control")
        viewers.append(controller)
        assert await controller.connect() == 201
        await controller.wait_more_frames(5)
        control_lie = Liar(controller)
        await wait_stats(agent, lambda s: cap(s) == MIN_BITRATE, 30,
                         "the control token's REMB to lower the cap")
        await asyncio.sleep(1.0)  # the encoder is re-created at the new cap
        control_rate, control_caps, _ = await watch(agent, honest, 6.0)
        assert control_caps == {MIN_BITRATE}, control_caps
        print(f"honest viewer: {view_rate / 1e6:.2f} Mbit/s while a view token lied, "
              f"{control_rate / 1e6:.2f} Mbit/s while a control token did; the liar decoded "
              f"{liar_frames} frames, the honest viewer {honest_frames} (6 s)")
        assert control_rate < 0.6 * view_rate, (control_rate, view_rate)
        await lie.stop()
        await control_lie.stop()
    finally:
        for v in viewers:
            await v.close()
        stop_agent(agent)


async def test_min_policy_lets_any_viewer_lower_the_cap(noisy_screen: XDisplay,
                                                        tmp_path: Path) -> None:
    agent = await start_agent(noisy_screen.name, SIZE, tmp_path, "--bitrate-policy", "min")
    liar = DirectViewer(agent, "liar")
    try:
        assert await liar.connect() == 201
        await liar.wait_more_frames(5)
        stats = await agent.stats()
        assert stats["media"]["bitrate"]["policy"] == "min"
        assert cap(stats) == START_BITRATE
        lie = Liar(liar)
        await wait_stats(agent, lambda s: cap(s) == MIN_BITRATE, 30,
                         "the view token's REMB to lower the cap")
        await lie.stop()
        assert peer_of(await agent.stats(), "view")["frames_paced_out"] == 0
    finally:
        await liar.close()
        stop_agent(agent)


def test_an_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bitrate_policy"):
        GatewayConfig(state_dir=tmp_path, bitrate_policy="max")


async def test_the_gateway_setting_reaches_the_runtime_agent(tmp_path: Path) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), bitrate_policy="min"):
        session = await gw.create_running(resolution="640x480")
        manager = gw.extra["app"][MANAGER]
        stats = await manager.agent(manager.get(session["session_id"])).stats()
        assert stats["media"]["bitrate"]["policy"] == "min"
        await gw.stop(session["session_id"])
