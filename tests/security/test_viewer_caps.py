"""A view-token holder against a real runtime agent: caps, ghost peers, huge data-channel
messages, a viewer that does not read (issue 21).

Each test runs ``python -m agent_side`` on a real Xvfb with a screen that keeps
changing, keeps an honest viewer watching, attacks with real aiortc peers or
real WebSocket connections, and checks that the attack is refused or cut off,
that the honest viewer keeps getting frames, and that the agent's memory
(``VmHWM``, the peak resident size) stays bounded.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from tests.conftest import XDisplay, start_xvfb, stop_xvfb
from tests.security.agent_process import (
    TOKEN_ID,
    TOKEN_KIND,
    AgentProcess,
    DirectViewer,
    Painter,
    start_agent,
    stop_agent,
    wait_stats,
    wait_until,
)

SIZE = (800, 600)
MIB = 1024  # /proc reports kB

StartAgent = Callable[..., Awaitable[AgentProcess]]


@pytest.fixture
async def screen() -> AsyncIterator[XDisplay]:
    display = start_xvfb(*SIZE)
    painter = Painter(display.name)
    painter.start()
    try:
        yield display
    finally:
        await painter.stop()
        stop_xvfb(display)


@pytest.fixture
async def run_agent(screen: XDisplay, tmp_path: Path) -> AsyncIterator[StartAgent]:
    started: list[AgentProcess] = []

    async def start(*args: str) -> AgentProcess:
        agent = await start_agent(screen.name, SIZE, tmp_path, *args)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        stop_agent(agent)


async def offer_sdp(strip_candidates: bool = False) -> str:
    """A real aiortc offer (recvonly video + the input channel), its peer closed."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("input")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    if strip_candidates:
        sdp = re.sub(r"a=(candidate:[^\r\n]*|end-of-candidates)\r\n", "", sdp)
        assert "candidate" not in sdp
    return sdp


async def post_offer(http: aiohttp.ClientSession, sdp: str, token_id: str,
                     kind: str = "view") -> tuple[int, dict[str, str], dict[str, Any] | str]:
    async with http.post("http://agent/whep", data=sdp,
                         headers={"Content-Type": "application/sdp", TOKEN_KIND: kind,
                                  TOKEN_ID: token_id}) as resp:
        body: dict[str, Any] | str = (await resp.json() if resp.content_type == "application/json"
                                      else await resp.text())
        return resp.status, dict(resp.headers), body


async def test_200_offers_from_one_view_token(run_agent: StartAgent) -> None:
    agent = await run_agent("--ice-deadline", "4")
    friend = DirectViewer(agent, "friend")
    assert await friend.connect() == 201
    await friend.wait_more_frames(10)
    hwm_before, fds_before = agent.status("VmHWM"), agent.fds()

    sdp = await offer_sdp()
    async with agent.http() as http:
        replies = await asyncio.gather(*(post_offer(http, sdp, "attacker") for _ in range(200)))
    statuses = [status for status, _, _ in replies]
    # Defaults: 6 viewers per token, 20 offers per token per minute.
    assert statuses.count(201) == 6, statuses
    assert statuses.count(429) == 194, statuses
    for status, headers, body in replies:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            assert isinstance(body, dict) and body["error"] == "viewer_limit"
            assert body["reason"] in ("token_viewers", "token_offer_rate")
    reasons = [body["reason"] for status, _, body in replies if isinstance(body, dict)]
    assert reasons.count("token_viewers") == 14 and reasons.count("token_offer_rate") == 180

    # The honest viewer keeps getting frames, and another token still gets in.
    await friend.wait_more_frames(20)
    second = DirectViewer(agent, "second")
    assert await second.connect() == 201
    await second.wait_more_frames(10)

    # The six admitted peers never connect: they are closed, and their descriptors go.
    stats = await wait_stats(agent, lambda s: s["viewers_by_transport"]["webrtc"] == 2, 30,
                             "the attacker's peers to be closed")
    assert stats["limits"]["refused"]["token_offer_rate"] == 180
    assert stats["limits"]["refused"]["token_viewers"] == 14
    await wait_until(lambda: agent.fds() <= fds_before + 10, 20,
                     f"descriptors back near {fds_before} (now {agent.fds()})")
    grown = agent.status("VmHWM") - hwm_before
    assert grown < 64 * MIB, f"peak memory grew by {grown} kB"
    await friend.wait_more_frames(10)
    await friend.close()
    await second.close()


async def test_offer_without_candidates_is_closed_at_the_deadline(
        run_agent: StartAgent) -> None:
    agent = await run_agent("--ice-deadline", "3")
    fds_before = agent.fds()
    async with agent.http() as http:
        status, _, answer = await post_offer(http, await offer_sdp(strip_candidates=True), "ghost")
    assert status == 201 and isinstance(answer, str) and "a=candidate" in answer
    stats = await agent.stats()
    assert stats["viewers_by_transport"]["webrtc"] == 1
    assert stats["limits"]["closed"]["ghost_peer"] == 0
    stats = await wait_stats(agent, lambda s: s["limits"]["closed"]["ghost_peer"] == 1, 20,
                             "the ghost peer to be closed")
    assert stats["viewers_by_transport"]["webrtc"] == 0
    await wait_until(lambda: agent.fds() <= fds_before + 2, 10,
                     f"descriptors back to {fds_before} (now {agent.fds()})")
    assert "closed: ghost peer" in agent.log.read_text()


async def test_20_mb_data_channel_message_closes_the_peer(run_agent: StartAgent) -> None:
    agent = await run_agent()
    friend = DirectViewer(agent, "friend")
    assert await friend.connect() == 201
    await friend.wait_more_frames(10)
    attacker = DirectViewer(agent, "attacker", with_channel=True)
    assert await attacker.connect() == 201
    # Honest browsers read this and never send more; the attacker ignores it.
    assert "a=max-message-size:262144" in attacker.answer
    await asyncio.wait_for(attacker.channel_open.wait(), 20)
    hwm_before = agent.status("VmHWM")
    assert attacker.pc.sctp is not None and attacker.channel is not None
    attacker.pc.sctp._remote_max_message_size = 0  # lift aiortc's own client-side check
    attacker.channel.send(b"\x00" * (20 * 1024 * 1024))

    stats = await wait_stats(agent, lambda s: s["limits"]["closed"]["datachannel_oversize"] == 1,
                             60, "the oversize peer to be closed")
    assert stats["viewers_by_transport"]["webrtc"] == 1
    await friend.wait_more_frames(20)
    grown = agent.status("VmHWM") - hwm_before
    assert grown < 16 * MIB, f"peak memory grew by {grown} kB for a 20 MB message"
    await attacker.close()
    await friend.close()


def _raw_websocket(path: Path, token_id: str) -> socket.socket:
    """A WebSocket to ``/stream`` that will never read a byte after the handshake."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(path))
    sock.sendall((f"GET /stream HTTP/1.1\r\nHost: agent\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{TOKEN_KIND}: view\r\n{TOKEN_ID}: {token_id}"
                  "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_slow_reading_websocket_viewer_is_cut_off(run_agent: StartAgent) -> None:
    agent = await run_agent()
    friend = DirectViewer(agent, "friend")
    assert await friend.connect() == 201
    await friend.wait_more_frames(10)
    hwm_before = agent.status("VmHWM")
    slow = await asyncio.to_thread(_raw_websocket, agent.socket, "slow")
    try:
        await wait_stats(agent, lambda s: any(v["frames_sent"] > 0 for v in s["stream_viewers"]),
                         30, "frames for the slow viewer")
        await asyncio.sleep(2)  # its 4 KiB receive buffer and the agent's send buffer fill up
        # A control change reaches everyone else while the slow viewer is stuck.
        async with agent.http() as http:
            for controller in ("human", "agent"):
                async with http.post("http://agent/control",
                                     json={"controller": controller, "owner": "someone"},
                                     timeout=aiohttp.ClientTimeout(total=8)) as resp:
                    assert resp.status == 200
        assert (await agent.stats())["viewers_by_transport"]["ws"] == 1, "not cut off yet"
        await friend.wait_more_frames(20)
        stats = await wait_stats(agent, lambda s: s["limits"]["slow_cut"] == 1, 60,
                                 "the slow viewer to be cut off")
        assert stats["viewers_by_transport"]["ws"] == 0
    finally:
        slow.close()
    await friend.wait_more_frames(20)
    grown = agent.status("VmHWM") - hwm_before
    assert grown < 32 * MIB, f"peak memory grew by {grown} kB for one stuck viewer"
    await friend.close()


async def _ws(http: aiohttp.ClientSession, token_id: str) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect("http://agent/stream",
                                 headers={TOKEN_KIND: "view", TOKEN_ID: token_id})


async def test_viewer_caps_per_token_transport_and_session(run_agent: StartAgent) -> None:
    agent = await run_agent("--max-viewers", "4", "--max-viewers-per-token", "2",
                            "--max-ws", "3", "--max-vnc", "1")
    async with agent.http() as http:
        a1, a2 = await _ws(http, "a"), await _ws(http, "a")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await _ws(http, "a")
        assert refused.value.status == 429
        assert refused.value.headers is not None and int(refused.value.headers["Retry-After"]) >= 1
        b1 = await _ws(http, "b")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await _ws(http, "c")  # a fourth WebSocket viewer: the transport is full
        assert refused.value.status == 503
        vnc = await http.ws_connect("http://agent/vnc", protocols=("binary",),
                                    headers={TOKEN_KIND: "view", TOKEN_ID: "c"})
        # Four viewers: the session is full for every transport.
        status, headers, body = await post_offer(http, await offer_sdp(), "d")
        assert status == 503 and int(headers["Retry-After"]) >= 1
        assert isinstance(body, dict) and body["reason"] == "session_viewers"
        stats = await agent.stats()
        assert stats["limits"]["open"] == {"webrtc": 0, "ws": 3, "vnc": 1}
        assert stats["limits"]["refused"]["token_viewers"] == 1
        assert stats["limits"]["refused"]["transport_viewers"] == 1
        assert stats["limits"]["refused"]["session_viewers"] == 1
        # Leaving frees the place.
        await a1.close()
        await wait_stats(agent, lambda s: s["limits"]["open"]["ws"] == 2, 10, "a1 to leave")
        friend = DirectViewer(agent, "d")
        assert await friend.connect() == 201
        await friend.wait_more_frames(5)
        for ws in (a2, b1, vnc):
            await ws.close()
        await friend.close()
