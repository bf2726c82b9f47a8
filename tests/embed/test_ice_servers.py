"""``--ice-server``: STUN/TURN servers offered to viewers.

* the setting is checked at start-up (schemes, TURN credentials, characters
  that would break a ``Link`` header);
* a WHEP ``201`` carries one ``Link: <URL>; rel="ice-server"`` per server
  (TURN with ``username``/``credential``/``credential-type``), exposed to an
  allowed origin by CORS; without servers there is no ``Link``;
* ``/sessions/{id}/info`` lists them as ``RTCIceServer`` entries;
* in real Chromium the viewer page's ``RTCPeerConnection`` uses them (a STUN
  ``Binding`` and a TURN ``Allocate`` with the configured user name reach the
  test's listener) and still connects; ``whip-whep`` on another origin reads
  the ``Link`` headers into its peer's configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from playwright.async_api import Browser

from gateway.config import GatewayConfig, IceServer, parse_ice_server
from tests.embed.pages import PageServer, sync
from tests.embed.stun_probe import StunProbe
from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes
from tests.viewer.pages import poll, wait_connected

TURN_USER = "viewer-7"
TURN_PASSWORD = "s3cret-Pass"


def test_ice_server_setting_is_checked() -> None:
    assert parse_ice_server("stun:stun.example:3478") == IceServer("stun:stun.example:3478")
    assert parse_ice_server("turns:t.example:443?transport=tcp;username=u;credential=p") == \
        IceServer("turns:t.example:443?transport=tcp", "u", "p")
    bad = {
        "https://stun.example": "expected a stun:",
        "stun:": "expected a stun:",
        "stun:a b": "expected a stun:",
        'stun:x">; rel="next': "expected a stun:",
        "stun:x;username=u;credential=p": "takes no credentials",
        "turn:x": "needs username= and credential=",
        "turn:x;username=u": "needs username= and credential=",
        "turn:x;username=u;credential=p q": "parameters are",
        'turn:x;username=u";credential=p': "parameters are",
        "turn:x;user=u;credential=p": "parameters are",
        "turn:x;username=u;credential=p;username=v": "parameters are",
    }
    for text, message in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_ice_server(text)
        with pytest.raises(ValueError, match=message):
            GatewayConfig(ice_servers=(text,))


@pytest.fixture
async def probe() -> AsyncIterator[StunProbe]:
    listener = StunProbe()
    await listener.start()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
async def pages() -> AsyncIterator[PageServer]:
    server = PageServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
async def ice_gateway(tmp_path: Path, probe: StunProbe,
                      pages: PageServer) -> AsyncIterator[Gateway]:
    servers = (f"stun:127.0.0.1:{probe.port}",
               f"turn:127.0.0.1:{probe.port}?transport=udp;username={TURN_USER};"
               f"credential={TURN_PASSWORD}")
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), ice_servers=servers,
                                       allowed_origins=(pages.allowed,)):
        gw.extra["ice"] = servers
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _whep(gw: Gateway, sid: str, token: str,
                origin: str | None = None) -> tuple[int, list[str], dict[str, str]]:
    pc, sdp = await _offer()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    if origin:
        headers["Origin"] = origin
    try:
        async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/whep"), data=sdp,
                                headers=headers) as resp:
            answer = await resp.text()
            links = resp.headers.getall("Link", [])
            plain = dict(resp.headers)
            status = resp.status
        if status == 201:
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            async with gw.http.delete(plain["Location"],
                                      headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 204
    finally:
        await pc.close()
    return status, links, plain


async def test_whep_answer_and_info_carry_the_ice_servers(ice_gateway: Gateway,
                                                          probe: StunProbe) -> None:
    gw = ice_gateway
    session = await gw.create_running(resolution="640x480", enable_recording=False)
    sid, view = session["session_id"], session["tokens"]["view"]
    try:
        status, links, headers = await _whep(gw, sid, view)
        assert status == 201, headers
        assert links == [
            f'<stun:127.0.0.1:{probe.port}>; rel="ice-server"',
            f'<turn:127.0.0.1:{probe.port}?transport=udp>; rel="ice-server"; '
            f'username="{TURN_USER}"; credential="{TURN_PASSWORD}"; credential-type="password"',
        ]
        async with gw.http.get(gw.url(f"/sessions/{sid}/info?token={view}")) as resp:
            info = await resp.json()
        assert info["ice_servers"] == [
            {"urls": [f"stun:127.0.0.1:{probe.port}"]},
            {"urls": [f"turn:127.0.0.1:{probe.port}?transport=udp"],
             "username": TURN_USER, "credential": TURN_PASSWORD},
        ]
    finally:
        await gw.stop(sid)


async def test_cors_exposes_link_and_no_servers_means_no_link(
        ice_gateway: Gateway, pages: PageServer, tmp_path: Path) -> None:
    gw = ice_gateway
    session = await gw.create_running(resolution="640x480", enable_recording=False)
    sid = session["session_id"]
    try:
        status, links, headers = await _whep(gw, sid, session["tokens"]["view"],
                                             origin=pages.allowed)
        assert status == 201 and len(links) == 2
        assert headers["Access-Control-Allow-Origin"] == pages.allowed
        assert "Link" in headers["Access-Control-Expose-Headers"].split(", ")
    finally:
        await gw.stop(sid)
    async for plain in in_process_gateway(tmp_path / "plain", apps=("xterm",)):
        other = await plain.create_running(resolution="640x480", enable_recording=False)
        try:
            status, links, _ = await _whep(plain, other["session_id"], other["tokens"]["view"])
            assert status == 201 and links == []
            async with plain.http.get(plain.url(
                    f"/sessions/{other['session_id']}/info?token={other['tokens']['view']}")) \
                    as resp:
                assert (await resp.json())["ice_servers"] == []
        finally:
            await plain.stop(other["session_id"])
    assert wait_no_pod_processes(tmp_path / "plain" / "state") == []


async def test_browsers_use_the_offered_servers(ice_gateway: Gateway, probe: StunProbe,
                                                pages: PageServer, browser: Browser) -> None:
    gw = ice_gateway
    session = await gw.create_running(resolution="640x480", enable_recording=False)
    sid, view = session["session_id"], session["tokens"]["view"]
    page = await browser.new_page()
    try:
        # the viewer page: its RTCPeerConnection gets both servers and still connects
        await page.goto(gw.url(f"/sessions/{sid}/?token={view}&transport=webrtc"))
        await wait_connected(page, "webrtc")
        config: dict[str, Any] = await page.evaluate(
            "vrViewer.transport.pc.getConfiguration()")
        assert [s["urls"] for s in config["iceServers"]] == [
            [f"stun:127.0.0.1:{probe.port}"], [f"turn:127.0.0.1:{probe.port}?transport=udp"]]
        await poll(sync(lambda: probe.bindings > 0 and TURN_USER in probe.usernames), 20,
                   f"a STUN Binding and a TURN Allocate as {TURN_USER!r} "
                   f"(bindings {probe.bindings}, allocates {probe.allocates})")
        await page.close()

        # whip-whep on another (allowed) origin reads the Link headers into its peer
        page = await browser.new_page()
        await page.goto(f"{pages.allowed}/player.html")
        await page.evaluate("([k, u, t]) => play(k, u, t)",
                            ["whip-whep", gw.url(f"/api/visual-sessions/{sid}/whep"), view])
        await page.wait_for_function("() => result.events.includes('answered')",
                                     timeout=20_000)
        servers = await page.evaluate("pc.getConfiguration().iceServers")
        assert {"urls": [f"stun:127.0.0.1:{probe.port}"]} in [
            {"urls": s["urls"]} for s in servers], servers
        turn = next(s for s in servers if s["urls"][0].startswith("turn:"))
        assert (turn["username"], turn["credential"]) == (TURN_USER, TURN_PASSWORD), servers
    finally:
        await page.close()
        await gw.stop(sid)
