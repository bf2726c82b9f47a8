"""The gateway's side of issue 21: viewer caps as problems, events and metrics; the Host check.

The caps themselves are enforced by the runtime agent (tests/security/test_viewer_caps.py);
here a real session behind an in-process gateway shows that the settings reach the
agent, that a refusal keeps its status and ``Retry-After``, and that it is filed
as an event and counted in /metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from gateway.appkeys import MANAGER
from gateway.security.host import allowed_host_names, host_allowed, host_name
from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes

LIMITS = (("max_viewers_per_token", 1.0), ("offers_per_minute", 3.0), ("max_ws", 1.0),
          ("ice_deadline_s", 2.0))


@pytest.fixture
async def capped_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), viewer_limits=LIMITS):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


async def _offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


def _events(gw: Gateway, sid: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in gw.extra["app"][MANAGER].events.history(sid) if e["type"] == kind]


async def _wait(cond: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_caps_are_problems_events_and_metrics(capped_gateway: Gateway) -> None:
    gw = capped_gateway
    session = await gw.create_running(resolution="800x600")
    sid, tokens = session["session_id"], session["tokens"]
    whep = gw.url(f"/api/visual-sessions/{sid}/whep")
    view = {"Authorization": f"Bearer {tokens['view']}", "Content-Type": "application/sdp"}
    offer = await _offer()
    async with gw.http.post(whep, data=offer, headers=view) as resp:
        assert resp.status == 201
    async with gw.http.post(whep, data=offer, headers=view) as resp:
        problem = await resp.json()
        assert resp.status == 429, problem
        assert resp.content_type == "application/problem+json"
        assert int(resp.headers["Retry-After"]) >= 1
        assert problem["type"].endswith("viewer-limit") and problem["status"] == 429
    refused = _events(gw, sid, "viewer_refused")
    assert [(e["transport"], e["status"], e["reason"]) for e in refused] == [
        ("webrtc", 429, "token_viewers")]

    # WebSocket viewers: one per session here; the second is a 503 problem.
    stream = gw.url(f"/sessions/{sid}/stream")
    first = await gw.http.ws_connect(f"{stream}?token={tokens['control']}")
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await gw.http.ws_connect(f"{stream}?token={session['tokens'].get('api', gw.token)}")
    assert e.value.status == 503
    assert e.value.headers is not None and int(e.value.headers["Retry-After"]) >= 1
    assert _events(gw, sid, "viewer_refused")[-1]["transport"] == "ws"
    await first.close()

    # The admitted peer never connects (nobody answers its ICE): closed at the 2 s deadline.
    await _wait(lambda: _events(gw, sid, "viewer_closed"), 30, "a viewer_closed event")
    closed = _events(gw, sid, "viewer_closed")[0]
    assert closed["reason"] == "ghost_peer" and closed["new"] == 1

    async with gw.http.get(gw.url("/metrics"), headers=gw.auth) as resp:  # per-session series
        text = await resp.text()
    assert f'visual_runtime_viewers_refused_total{{session="{sid}",reason="token_viewers"}} 1' \
        in text, text
    assert f'visual_runtime_viewers_closed_total{{session="{sid}",reason="ghost_peer"}} 1' in text
    await gw.stop(sid)


@pytest.fixture
async def plain_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",),
                                       allowed_hosts=("vr.example.com", "2001:db8::5")):
        yield gw


@pytest.mark.parametrize(("host", "status"), [
    ("localhost", 200), ("127.0.0.1:3000", 200), ("[::1]:3000", 200),
    ("vr.example.com", 200), ("VR.EXAMPLE.COM.:443", 200), ("[2001:db8::5]:8443", 200),
    ("evil.example", 421), ("evil.example:3000", 421), ("127.0.0.1.evil.example", 421),
    ("localhost:notaport", 421), ("vr.example.com@evil.example", 421),
])
async def test_host_header(plain_gateway: Gateway, host: str, status: int) -> None:
    gw = plain_gateway
    for path in ("/healthz", "/api/visual-sessions"):
        async with gw.http.get(gw.url(path), headers={**gw.auth, "Host": host}) as resp:
            assert resp.status == status, (path, host, await resp.text())
            if status == 421:
                assert resp.content_type == "application/problem+json"
                assert (await resp.json())["status"] == 421


def test_host_names() -> None:
    assert host_name("[::1]:80") == "::1" and host_name("Example.COM:8080") == "example.com"
    assert host_name("[::1") is None and host_name("a:b:c") is None
    assert allowed_host_names("0.0.0.0", ()) == frozenset({"localhost", "127.0.0.1", "::1"})
    assert "10.1.2.3" in (allowed_host_names("10.1.2.3", ()) or ())
    assert allowed_host_names("127.0.0.1", ("*",)) is None
    assert host_allowed("anything", None)


def test_every_viewer_limit_setting_is_a_runtime_agent_flag(tmp_path: Path) -> None:
    from agent_side.__main__ import parse_args
    from gateway.backends.base import viewer_limit_args
    from gateway.cli.main import _viewer_limits
    from gateway.config import GatewayConfig
    from wire.agent_api import VIEWER_LIMITS

    values = {name: float(i + 2) for i, name in enumerate(VIEWER_LIMITS)}
    values["datachannel_max_bytes"] = 4096.0
    items = [f"{name}={value:g}" for name, value in values.items()]
    config = GatewayConfig(state_dir=tmp_path, viewer_limits=_viewer_limits(items))
    agent = parse_args(["--socket", "/tmp/x.sock", "--display", ":9", "--resolution", "64x64",
                        *viewer_limit_args(config)])
    assert {name: float(getattr(agent.limits, name)) for name in VIEWER_LIMITS} == values
    with pytest.raises(ValueError):
        GatewayConfig(state_dir=tmp_path, viewer_limits=(("max_everything", 1.0),))
    with pytest.raises(SystemExit):
        _viewer_limits(["max_ws=lots"])
