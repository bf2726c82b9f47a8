"""Playwright (Python, Debian's Chromium as its client) drives a live session's
Chromium through ``/api/visual-sessions/{id}/cdp``: a page from the shared
folder, a form, the DOM, a CDP screenshot; an aiortc viewer sees the change;
a human's take holds the script's input until release."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import async_playwright

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import Gateway
from tests.webrtc.whep_client import WhepViewer, wait_until

FORM = """<!doctype html><html><head><title>cdp form</title>
<style>body{margin:0;background:#fff} body.done{background:#f00}</style></head>
<body><form id=f onsubmit="event.preventDefault();
 document.getElementById('out').textContent='hello '+document.getElementById('name').value;
 document.body.className='done'">
<input id=name style="font-size:40px"><button id=go style="font-size:40px">go</button></form>
<p id=out></p><button id=second style="font-size:40px"
 onclick="document.getElementById('out').textContent='second click'">second</button>
</body></html>"""


async def events_of(gw: Gateway, sid: str, type_: str) -> list[dict[str, Any]]:
    """The session's events of *type_* so far (the in-process gateway's event hub)."""
    return [e for e in gw.extra["app"][MANAGER].events.history(sid) if e.get("type") == type_]


async def control(gw: Gateway, sid: str, token: str, action: str) -> None:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                            json={"action": action},
                            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()


def red_share(viewer: WhepViewer) -> float:
    """Share of strongly red pixels in the latest decoded frame."""
    frame = viewer.frames[-1].frame
    if frame is None:
        return 0.0
    rgb = frame.to_ndarray(format="rgb24")
    red = (rgb[:, :, 0] > 200) & (rgb[:, :, 1] < 60) & (rgb[:, :, 2] < 60)
    return float(red.mean())


async def test_playwright_drives_the_session_and_waits_for_the_human(gateway: Gateway) -> None:
    gw = gateway
    session = await gw.create_running(resolution="1280x720")
    sid = session["session_id"]
    files = gw.state_dir / "sessions" / sid / "home" / "Downloads"
    (files / "form.html").write_text(FORM)
    (files / "form.html").chmod(0o644)
    viewer = WhepViewer(gw, sid, session["tokens"]["view"])
    await viewer.connect()
    cdp_url = gw.url(f"/api/visual-sessions/{sid}/cdp")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.connect_over_cdp(cdp_url, headers=gw.auth)
            context = browser.contexts[0]
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto("file:///home/user/Downloads/form.html")
            await page.fill("#name", "playwright")
            await page.click("#go")
            assert await page.text_content("#out") == "hello playwright"
            cdp = await context.new_cdp_session(page)
            shot = await cdp.send("Page.captureScreenshot", {"format": "png"})
            assert base64.b64decode(shot["data"]).startswith(b"\x89PNG\r\n\x1a\n")
            await cdp.detach()
            # the page turned red: the aiortc viewer's frames show it
            await wait_until(lambda: bool(viewer.frames) and red_share(viewer) > 0.3, 20,
                             "a red page in the WebRTC frames")

            # A human takes control: the script's next click is held, reads go on.
            await control(gw, sid, session["tokens"]["control"], "take")
            click = asyncio.create_task(page.click("#second"))
            agent = gw.extra["app"][MANAGER].agent(gw.extra["app"][MANAGER].get(sid))
            for _ in range(300):  # until the click's input reaches the proxy and is held
                if (await agent.stats())["cdp"]["holding"] >= 1:
                    break
                await asyncio.sleep(0.1)
            assert (await agent.stats())["cdp"]["holding"] >= 1
            assert await page.evaluate("document.title") == "cdp form"
            assert await page.text_content("#out") == "hello playwright"
            assert not click.done()
            await control(gw, sid, session["tokens"]["control"], "release")
            await click
            assert await page.text_content("#out") == "second click"
            await browser.close()
        closed: list[dict[str, Any]] = []
        for _ in range(200):
            closed = [e for e in await events_of(gw, sid, "cdp") if e.get("status") == "closed"]
            if closed:
                break
            await asyncio.sleep(0.1)
        assert closed, "no cdp 'closed' event"
        summary = closed[-1]
        assert summary["held"] >= 1, summary
        assert summary["commands"] > 10 and summary["token_kind"] == "api", summary
        assert any(e.get("status") == "connected" for e in await events_of(gw, sid, "cdp"))
    finally:
        await viewer.close()
        await gw.stop(sid)


async def test_refuse_mode_bad_input_and_tokens(gateway: Gateway) -> None:
    gw = gateway
    first = await gw.create_running()
    second = await gw.create_running(network="none")
    sid, other = first["session_id"], second["session_id"]
    base = gw.url(f"/api/visual-sessions/{sid}/cdp")
    try:
        # tokens: view 403, none 401, another session's 403, control ok
        for token, status in ((first["tokens"]["view"], 403), (None, 401),
                              (second["tokens"]["control"], 403)):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with gw.http.get(base + "/json/version", headers=headers) as resp:
                assert resp.status == status, await resp.text()
                assert resp.content_type == "application/problem+json"
            try:
                async with gw.http.ws_connect(base, headers=headers):
                    raise AssertionError("the WebSocket was accepted")
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == status
        ctl = {"Authorization": f"Bearer {first['tokens']['control']}"}
        async with gw.http.get(base + "/json/version/", headers=ctl) as resp:
            version = await resp.json()
            assert resp.status == 200 and version["Browser"].startswith("Chrome/")
            assert version["webSocketDebuggerUrl"].startswith("ws://")
            assert version["webSocketDebuggerUrl"].endswith(f"/api/visual-sessions/{sid}/cdp")

        async with gw.http.ws_connect(base + "?on_human=refuse", headers=ctl,
                                      max_msg_size=0) as ws:
            # one client at a time
            try:
                async with gw.http.ws_connect(base, headers=gw.auth):
                    raise AssertionError("a second client was accepted")
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == 409
            await ws.send_str("{not json")
            await ws.send_bytes(b"\x00\x01")
            await ws.send_str(json.dumps({"id": 1, "method": "No.suchMethod"}))
            await ws.send_str(json.dumps({"id": 2, "method": "not a method"}))
            await ws.send_str(json.dumps({"id": 3, "method": "Browser.close"}))
            await ws.send_str('{"id": 4, "method": "Runtime.evaluate", "params": {"expression": "'
                              + "x" * (9 * 1024 * 1024) + '"}}')
            await ws.send_str(json.dumps({"id": 5, "method": "Browser.getVersion"}))
            replies: dict[int, dict[str, Any]] = {}
            while 5 not in replies:
                message = json.loads((await ws.receive(timeout=20)).data)
                if "id" in message:
                    replies[message["id"]] = message
            assert replies[1]["error"]["code"] == -32601
            assert replies[2]["error"]["code"] == -32601
            assert "not allowed" in replies[3]["error"]["message"]
            assert "larger than" in replies[4]["error"]["message"]
            assert replies[5]["result"]["product"].startswith("Chrome/")
            # a human holds control: input is refused at once in refuse mode
            await control(gw, sid, first["tokens"]["control"], "take")
            await ws.send_str(json.dumps({"id": 6, "method": "Input.dispatchMouseEvent", "params": {
                "type": "mouseMoved", "x": 10, "y": 10}}))
            reply = json.loads((await ws.receive(timeout=20)).data)
            assert reply["id"] == 6 and "human holds control" in reply["error"]["message"]
            await control(gw, sid, first["tokens"]["control"], "release")
        closed: list[dict[str, Any]] = []
        for _ in range(200):
            closed = [e for e in await events_of(gw, sid, "cdp") if e.get("status") == "closed"]
            if closed:
                break
            await asyncio.sleep(0.1)
        dropped = closed[-1]["dropped"]
        assert dropped["malformed"] == 1 and dropped["binary"] == 1, dropped
        assert dropped["oversized"] == 1 and dropped["refused_method"] == 1, dropped
        assert dropped["unknown_method"] == 2, dropped
        assert closed[-1]["refused_while_human"] == 1
        session = await gw.get(sid)
        assert session["status"] == "running"
    finally:
        await gw.stop(sid)
        await gw.stop(other)


def _listening_tcp(pid: int) -> list[str]:
    """LISTEN sockets (state 0A) in the network namespace of *pid*."""
    rows = []
    for name in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{name}")
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                rows.append(fields[1])
    return rows


def _chromium_pids(sid: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"/{sid}.app" in cgroup and cmdline and cmdline[0].endswith(b"/chromium"):
            pids.append(int(entry.name))
    return pids


async def test_devtools_has_no_port_and_a_restart_is_a_clear_error(gateway: Gateway) -> None:
    gw = gateway
    session = await gw.create_running(network="none")
    sid = session["session_id"]
    base = gw.url(f"/api/visual-sessions/{sid}/cdp")
    try:
        async with gw.http.get(base + "/json/version", headers=gw.auth) as resp:
            assert resp.status == 200
        pids = _chromium_pids(sid)
        assert pids, "no chromium in the app sandbox"
        for pid in pids:
            args = (Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")
            assert not any(a.startswith(b"--remote-debugging-port") for a in args)
        browser = min(pids)
        assert b"--remote-debugging-pipe" in Path(f"/proc/{browser}/cmdline").read_bytes()
        # nothing listens on TCP inside the sandbox's network namespace
        assert _listening_tcp(browser) == []

        async with gw.http.ws_connect(base, headers=gw.auth) as ws:
            os.kill(browser, signal.SIGKILL)
            message = await ws.receive(timeout=30)
            while message.type == aiohttp.WSMsgType.TEXT:
                message = await ws.receive(timeout=30)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1012
        # while it restarts: 503 with Retry-After (or, once back, a working browser)
        statuses = []
        for _ in range(200):
            async with gw.http.get(base + "/json/version", headers=gw.auth) as resp:
                statuses.append(resp.status)
                if resp.status == 503:
                    assert resp.headers["Retry-After"].isdigit()
                    assert "Chromium" in (await resp.json())["detail"]
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert statuses[-1] == 200, statuses
        assert set(statuses) <= {200, 503}, statuses
        assert (await gw.get(sid))["status"] == "running"
    finally:
        await gw.stop(sid)
