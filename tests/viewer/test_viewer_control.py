"""Control rules seen from the page and from the raw WebSocket transports.

* a page opened with a view token cannot take control (no button, 403);
* a page reloaded with the same control token keeps ``human`` control;
* the server refuses input from a view token on the stream WebSocket, and
  the noVNC bridge drops RFB input bytes unless the token holds control.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import aiohttp
from playwright.async_api import Browser

from tests.gateway_fixtures import Gateway

from .pages import open_viewer, wait_connected
from .test_viewer_page import shot


async def cursor(gw: Gateway, sid: str) -> list[int]:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"),
                            json={"action": "cursor_position"}, headers=gw.auth) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return list(body["cursor"])


async def set_control(gw: Gateway, sid: str, token: str, action: str) -> tuple[int, Any]:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"), json={"action": action},
                            headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_view_token_page_cannot_take_control(light_gateway: Gateway, browser: Browser) -> None:
    gw = light_gateway
    session = await gw.create_running()
    sid, view = session["session_id"], session["tokens"]["view"]
    page = await open_viewer(browser, gw, sid, view, transport="ws")
    await wait_connected(page, "ws")
    assert await page.locator("#btn-control").is_hidden()
    await shot(page, "viewer-view-token.png")
    assert await page.evaluate("document.body.dataset.tokenKind") == "view"
    # The page's own API call with its token is refused.
    status = await page.evaluate("""async () => {
        try { await vrViewer.api.setControl('take'); return 200; }
        catch (e) { return e.status; }
    }""")
    assert status == 403
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/control"), headers=gw.auth) as r:
        assert (await r.json())["controller"] == "agent"
    await page.close()


async def test_reload_keeps_control(light_gateway: Gateway, browser: Browser) -> None:
    gw = light_gateway
    session = await gw.create_running()
    sid, token = session["session_id"], session["tokens"]["control"]
    page = await open_viewer(browser, gw, sid, token, transport="ws")
    await wait_connected(page, "ws")
    await page.click("#btn-control")
    await page.wait_for_function("() => document.body.dataset.control === 'mine'", timeout=15000)
    await page.reload()
    await wait_connected(page, "ws")
    await page.wait_for_function("() => document.body.dataset.control === 'mine'", timeout=15000)
    assert await page.locator("#controller").inner_text() == "you"
    # The reloaded page's input still reaches the desktop.
    await page.mouse.move(500, 400)
    await page.mouse.move(520, 410)
    status, body = await set_control(gw, sid, token, "release")
    assert status == 200, body
    await page.wait_for_function("() => document.body.dataset.control === 'agent'", timeout=15000)
    await page.close()


async def test_stream_socket_refuses_view_token_input(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running()
    sid, view = session["session_id"], session["tokens"]["view"]
    start = await cursor(gw, sid)
    target = [start[0] + 37 if start[0] < 1000 else 100, 333]
    url = gw.url(f"/sessions/{sid}/stream?token={view}")
    async with gw.http.ws_connect(url) as ws:
        hello = json.loads(await ws.receive_str(timeout=10))
        assert hello["type"] == "hello" and hello["width"] == 1600
        assert json.loads(await ws.receive_str(timeout=10)) == {"type": "control",
                                                               "controller": "agent"}
        await ws.send_str(json.dumps({"type": "mouse_move", "x": target[0], "y": target[1]}))
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.BINARY:
                assert msg.data[0] == 1  # video frames keep flowing meanwhile
                continue
            reply = json.loads(msg.data)
            break
        assert reply["type"] == "error" and reply["code"] == "not_in_control", reply
    assert await cursor(gw, sid) == start


async def test_stream_socket_needs_a_token(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running()
    sid = session["session_id"]
    async with gw.http.get(gw.url(f"/sessions/{sid}/stream")) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
    other = await gw.create_running()
    async with gw.http.get(gw.url(f"/sessions/{sid}/stream?token={other['tokens']['view']}")) as r:
        assert r.status == 403
    async with gw.http.get(gw.url(f"/sessions/{sid}/?token=nope")) as r:
        assert r.status == 401
        assert r.content_type == "application/problem+json"


class RfbClient:
    """Just enough of an RFB client: handshake, raw updates, pointer events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.buf = bytearray()

    async def need(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await self.ws.receive(timeout=15)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            self.buf.extend(msg.data)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def handshake(self) -> None:
        version = await self.need(12)
        assert version.startswith(b"RFB 003.")
        await self.ws.send_bytes(b"RFB 003.008\n")
        count = (await self.need(1))[0]
        types = await self.need(count)
        assert 1 in types, types
        await self.ws.send_bytes(b"\x01")
        assert await self.need(4) == b"\x00\x00\x00\x00"
        await self.ws.send_bytes(b"\x01")  # ClientInit: shared
        head = await self.need(24)
        assert struct.unpack_from(">HH", head) == (1600, 900)
        self.bpp = head[4] // 8
        await self.need(struct.unpack_from(">I", head, 20)[0])

    async def pointer_then_update(self, x: int, y: int) -> None:
        """Send a pointer event, then a full-update request, and read its answer.

        x11vnc handles a client's messages in order, so once the update is
        here the pointer event has been applied (or was dropped before it).
        """
        await self.ws.send_bytes(struct.pack(">BBHH", 5, 0, x, y)
                                 + struct.pack(">BBHHHH", 3, 0, 0, 0, 8, 8))
        while True:
            kind = (await self.need(1))[0]
            if kind == 0:  # FramebufferUpdate, raw rectangles (no SetEncodings sent)
                _, count = struct.unpack(">BH", await self.need(3))
                for _ in range(count):
                    _, _, w, h, enc = struct.unpack(">HHHHi", await self.need(12))
                    assert enc == 0, enc
                    await self.need(w * h * self.bpp)
                return
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                length = struct.unpack(">xxxI", await self.need(7))[0]
                await self.need(length)
                continue
            raise AssertionError(f"unexpected RFB server message {kind}")


async def _rfb_connect(gw: Gateway, sid: str, token: str) -> RfbClient:
    ws = await gw.http.ws_connect(gw.url(f"/sessions/{sid}/vnc/websockify?token={token}"),
                                  protocols=("binary",))
    client = RfbClient(ws)
    await client.handshake()
    return client


async def test_vnc_input_needs_control(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running()
    sid, tokens = session["session_id"], session["tokens"]
    start = await cursor(gw, sid)

    # View token: the pointer event is dropped on the server; the stream stays in sync.
    rfb = await _rfb_connect(gw, sid, tokens["view"])
    await rfb.pointer_then_update(777, 555)
    await rfb.ws.close()
    assert await cursor(gw, sid) == start

    # Control token without a take: dropped too.
    rfb = await _rfb_connect(gw, sid, tokens["control"])
    await rfb.pointer_then_update(777, 555)
    assert await cursor(gw, sid) == start

    # After a take with that token, the same bytes move the pointer.
    status, body = await set_control(gw, sid, tokens["control"], "take")
    assert status == 200, body
    await rfb.pointer_then_update(777, 555)
    status, body = await set_control(gw, sid, tokens["control"], "release")
    assert status == 200, body
    await rfb.ws.close()
    assert await cursor(gw, sid) == [777, 555]
