"""Revoking a session token before the session ends (issue 20, low: "tokens cannot be
revoked").

On a real session (local backend) with real viewers: a minted view token has an
aiortc WHEP viewer, a WebSocket viewer and a noVNC connection, the created view
token a WHEP and a WebSocket viewer. ``DELETE /api/visual-sessions/{id}/tokens/{token_id}`` (API token) closes
the revoked token's three connections — its WHEP peer is gone from the runtime
agent, its WebSocket and noVNC connections are closed with 1008 — while the other token's viewers keep
receiving frames; the revoked token is refused (401 problem) on the viewer page,
the API and WHEP from then on. A revoked control token that held control
releases it (the agent's actions go through again), and a CDP client on a
revoked control token is cut off. An unknown id is a 404
problem and changes nothing; a session token may not revoke (403). Each
revocation is a ``token_revoked`` event.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gateway.appkeys import MANAGER
from gateway.sessions.tokens import token_hash
from tests.gateway_fixtures import Gateway
from tests.webrtc.test_settled_picture import WsViewer
from tests.webrtc.whep_client import Typist, WhepViewer, wait_until

pytestmark = pytest.mark.timeout(240)


async def _mint(gw: Gateway, sid: str, kind: str) -> dict[str, Any]:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/tokens"), json={"kind": kind},
                            headers=gw.auth) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return body


async def _revoke(gw: Gateway, sid: str, token_id: str,
                  token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token or gw.token}"}
    async with gw.http.delete(gw.url(f"/api/visual-sessions/{sid}/tokens/{token_id}"),
                              headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _status(gw: Gateway, method: str, path: str, token: str, **kw: Any) -> tuple[int, str]:
    async with gw.http.request(method, gw.url(path), headers={"Authorization": f"Bearer {token}",
                                                              **kw.pop("headers", {})},
                               **kw) as resp:
        await resp.read()
        return resp.status, resp.content_type


async def _peers(gw: Gateway, sid: str) -> list[str]:
    """The ids of the WebRTC peers the session's runtime agent has."""
    manager = gw.extra["app"][MANAGER]
    return sorted(p["peer_id"] for p in (await manager.agent(manager.get(sid)).stats())["peers"])


def _peer_id(viewer: WhepViewer) -> str:
    assert viewer.location is not None
    return viewer.location.rsplit("/", 1)[1]


async def _events(gw: Gateway, sid: str, type_: str) -> list[dict[str, Any]]:
    return [e for e in gw.extra["app"][MANAGER].events.history(sid) if e["type"] == type_]


async def test_revoked_token_loses_its_viewers_and_control(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid, created = session["session_id"], session["tokens"]
    doomed = await _mint(gw, sid, "view")
    assert doomed["token_id"] == token_hash(doomed["token"])[:32]
    controller = await _mint(gw, sid, "control")
    base = f"/api/visual-sessions/{sid}"

    keep_whep = WhepViewer(gw, sid, created["view"])
    doomed_whep = WhepViewer(gw, sid, doomed["token"])
    keep_ws = WsViewer(gw, sid, created["view"])
    doomed_ws = WsViewer(gw, sid, doomed["token"])
    vnc: aiohttp.ClientWebSocketResponse | None = None
    try:
        for viewer in (keep_whep, doomed_whep):
            await viewer.connect()
        for ws_viewer in (keep_ws, doomed_ws):
            await ws_viewer.start()
        # and a noVNC connection (RFB over WebSocket) with the doomed token
        vnc = await gw.http.ws_connect(
            gw.url(f"/sessions/{sid}/vnc/websockify?token={doomed['token']}"),
            protocols=("binary",))
        greeting = await vnc.receive(timeout=20)
        assert greeting.type == aiohttp.WSMsgType.BINARY and greeting.data.startswith(b"RFB ")
        async with Typist(gw, sid):
            await keep_whep.wait_frames(2)
            await doomed_whep.wait_frames(2)
            await wait_until(lambda: keep_ws.frames >= 2 and doomed_ws.frames >= 2, 30,
                             "frames on both WebSocket viewers")
        assert await _peers(gw, sid) == sorted([_peer_id(keep_whep), _peer_id(doomed_whep)])
        # The minted control token takes control: the agent's actions are refused.
        status, _ = await _status(gw, "POST", base + "/control", controller["token"],
                                  json={"action": "take"})
        assert status == 200
        status, _ = await _status(gw, "POST", base + "/actions", gw.token,
                                  json={"action": "type", "text": "x"})
        assert status == 409

        # Bad ids: 404 problem, nothing changes; a session token may not revoke.
        for bad in ("0" * 32, doomed["token_id"][:31], "not-a-token-id"):
            status, problem = await _revoke(gw, sid, bad)
            assert status == 404, problem
            assert problem["type"].endswith("/not-found")
        status, problem = await _revoke(gw, sid, doomed["token_id"], token=created["control"])
        assert status == 403, problem
        assert await _events(gw, sid, "token_revoked") == []
        assert doomed_ws._ws is not None and not doomed_ws._ws.closed
        status, _ = await _status(gw, "GET", f"/sessions/{sid}/info", doomed["token"])
        assert status == 200

        # Revoke the view token: its WHEP peer, WebSocket and noVNC connection go, at once.
        status, result = await _revoke(gw, sid, doomed["token_id"])
        assert status == 200, result
        assert result["kind"] == "view" and result["closed"] == 3
        assert await _peers(gw, sid) == [_peer_id(keep_whep)]
        await wait_until(lambda: doomed_ws._ws is not None and doomed_ws._ws.closed, 10,
                         "the revoked token's WebSocket to close")
        assert doomed_ws._ws is not None
        assert doomed_ws._ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
        while (closing := await vnc.receive(timeout=10)).type is aiohttp.WSMsgType.BINARY:
            pass  # RFB bytes sent before the close
        assert closing.type is aiohttp.WSMsgType.CLOSE, closing
        assert (closing.data, closing.extra) == (aiohttp.WSCloseCode.POLICY_VIOLATION,
                                                 "token revoked")
        await wait_until(lambda: doomed_whep.pc.connectionState in ("closed", "failed"), 30,
                         "the revoked token's WebRTC peer to end")
        for method, path, kw in (("GET", f"/sessions/{sid}/info", {}),
                                 ("GET", base, {}),
                                 ("POST", base + "/whep", {"data": doomed_whep.answer_sdp,
                                                           "headers": {"Content-Type":
                                                                       "application/sdp"}})):
            status, ctype = await _status(gw, method, path, doomed["token"], **kw)
            assert (status, ctype) == (401, "application/problem+json"), (method, path)
        status, problem = await _revoke(gw, sid, doomed["token_id"])  # already revoked
        assert status == 404, problem

        # Revoke the control token that holds control: control goes back to the agent.
        status, result = await _revoke(gw, sid, controller["token_id"])
        assert status == 200, result
        assert result["released_control"] is True
        assert (await gw.get(sid))["controller"] == "agent"
        control_events = await _events(gw, sid, "control")
        assert control_events[-1]["by"] == "revoked"

        # The other token's viewers still get frames (the agent types again).
        whep_before, ws_before = len(keep_whep.frames), keep_ws.frames
        frozen_whep, frozen_ws = len(doomed_whep.frames), doomed_ws.frames
        async with Typist(gw, sid) as typist:
            await keep_whep.wait_frames(whep_before + 3, within=30)
            await wait_until(lambda: keep_ws.frames >= ws_before + 3, 30,
                             "frames on the kept WebSocket viewer")
            assert typist.typed > 0
        assert keep_whep.pc.connectionState == "connected"
        assert keep_ws._ws is not None and not keep_ws._ws.closed
        assert (len(doomed_whep.frames), doomed_ws.frames) == (frozen_whep, frozen_ws)

        revoked = await _events(gw, sid, "token_revoked")
        assert [(e["kind"], e["token_id"]) for e in revoked] == [
            ("view", doomed["token_id"]), ("control", controller["token_id"])]
    finally:
        for viewer in (keep_whep, doomed_whep):
            await viewer.close()
        for ws_viewer in (keep_ws, doomed_ws):
            await ws_viewer.close()
        if vnc is not None:
            await vnc.close()
    await gw.stop(sid)


async def test_revoked_control_token_loses_its_cdp_connection(gateway: Gateway) -> None:
    """A CDP client (raw DevTools protocol over the gateway's WebSocket) on a minted
    control token is cut off with 1008 when the token is revoked; the API token's
    own CDP connection afterwards works."""
    gw = gateway
    session = await gw.create_running(resolution="800x600")
    sid = session["session_id"]
    minted = await _mint(gw, sid, "control")
    cdp_url = gw.url(f"/api/visual-sessions/{sid}/cdp")
    ws = await gw.http.ws_connect(cdp_url, headers={"Authorization": f"Bearer {minted['token']}"})
    try:
        await ws.send_json({"id": 1, "method": "Browser.getVersion"})
        reply = await ws.receive_json(timeout=30)
        assert reply["id"] == 1 and "product" in reply["result"], reply
        status, result = await _revoke(gw, sid, minted["token_id"])
        assert status == 200 and result["closed"] == 1, result
        closing = await ws.receive(timeout=10)
        assert closing.type is aiohttp.WSMsgType.CLOSE, closing
        assert (closing.data, closing.extra) == (aiohttp.WSCloseCode.POLICY_VIOLATION,
                                                 "token revoked")
    finally:
        await ws.close()
    status, _ = await _status(gw, "GET", f"/api/visual-sessions/{sid}/cdp/json/version",
                              minted["token"])
    assert status == 401
    # The browser is free again for another client (the API token), once the runtime
    # agent has seen the revoked one go (409 "busy" until then).
    for _ in range(40):
        try:
            again = await gw.http.ws_connect(cdp_url, headers=gw.auth)
        except aiohttp.WSServerHandshakeError as e:
            assert e.status == 409, e
            await asyncio.sleep(0.5)
            continue
        try:
            await again.send_json({"id": 2, "method": "Browser.getVersion"})
            assert (await again.receive_json(timeout=30))["id"] == 2
        finally:
            await again.close()
        break
    else:
        raise AssertionError("the API token's CDP connection never got an answer")
    await gw.stop(sid)
