"""Cross-origin use of a live session in real headless Chromium, from a web app the
test serves on another origin (``http://127.0.0.1:PORT``, allowed) and the same
app under an origin that is not allowed (``http://localhost:PORT``):

* ``@eyevinn/webrtc-player`` and ``whip-whep`` (npm, pinned, bundled by esbuild)
  play the session over WHEP and decode frames that match the session's screen;
* the viewer, iframed in embed mode, posts its state to the parent and takes and
  releases control on the parent's commands (the session's control changes in
  the API); a sibling frame of another origin cannot drive it;
* a page on an origin that is not allowed is refused: both players fail on the
  CORS preflight and the frame is blocked by ``frame-ancestors``;
* a parent that may frame the viewer (``--frame-ancestors``) but is not an
  allowed origin gets no message and cannot command it.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Browser, ConsoleMessage, Frame, Page

from tests.embed.pages import PageServer, messages, sync
from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes
from tests.viewer.pages import poll

SIZE = (640, 480)


@pytest.fixture
async def pages() -> AsyncIterator[PageServer]:
    server = PageServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
async def embed_gateway(tmp_path: Path, pages: PageServer) -> AsyncIterator[Gateway]:
    """Sessions with Xvfb + xterm; the page server's 127.0.0.1 origin is allowed."""
    async for gw in in_process_gateway(tmp_path, apps=("xterm",),
                                       allowed_origins=(pages.allowed,)):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


async def _session(gw: Gateway) -> dict[str, Any]:
    return await gw.create_running(resolution=f"{SIZE[0]}x{SIZE[1]}", enable_recording=False)


async def _controller(gw: Gateway, sid: str) -> str:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/control"),
                           headers=gw.auth) as resp:
        assert resp.status == 200
        controller: str = (await resp.json())["controller"]
        return controller


def _console(page: Page) -> list[str]:
    lines: list[str] = []

    def keep(msg: ConsoleMessage) -> None:
        lines.append(msg.text)

    page.on("console", keep)
    return lines


async def _screenshot_grey(gw: Gateway, sid: str, w: int, h: int) -> np.ndarray:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200
        png = await resp.read()
    image = Image.open(io.BytesIO(png)).convert("L").resize((w, h), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float64)


@pytest.mark.parametrize("player", ["eyevinn", "whip-whep"])
async def test_npm_players_on_an_allowed_origin_decode_the_session(
        embed_gateway: Gateway, pages: PageServer, browser: Browser, player: str) -> None:
    gw = embed_gateway
    session = await _session(gw)
    sid = session["session_id"]
    page = await browser.new_page()
    try:
        await page.goto(f"{pages.allowed}/player.html")
        assert await page.evaluate("location.origin") != gw.base_url
        await page.evaluate("([k, u, t]) => play(k, u, t)",
                            [player, gw.url(f"/api/visual-sessions/{sid}/whep"),
                             session["tokens"]["view"]])
        await page.wait_for_function(
            "() => result.frames >= 3 && document.getElementById('v').currentTime > 0",
            timeout=30_000)
        result = await page.evaluate("result")
        assert (result["width"], result["height"]) == SIZE, result
        assert result["errors"] == [], result
        # what was decoded is the session's screen (an xterm on a black root window)
        w, h = 64, 48
        shown = np.asarray(await page.evaluate(f"pixels({w}, {h})"),
                           dtype=np.float64).reshape(h, w)
        screen = await _screenshot_grey(gw, sid, w, h)
        assert screen.std() > 30, "the session's screen is uniform: the check would be void"
        assert float(np.abs(shown - screen).mean()) < 20, (shown.mean(), screen.mean())
        if player == "whip-whep":  # it read the absolute Location through CORS
            resource = await page.evaluate("player.resourceURL.href")
            assert resource.startswith(gw.url(f"/api/visual-sessions/{sid}/whep/")), resource
    finally:
        await page.close()
    await gw.stop(sid)


def _logged(console: list[str], text: str) -> bool:
    return any(text in line for line in console)


def _frame_at(page: Page, base_url: str) -> Frame | None:
    return next((f for f in page.frames if f.url.startswith(base_url)), None)


def _viewer_frame(page: Page, gw: Gateway) -> Frame:
    for frame in page.frames:
        if frame.url.startswith(gw.base_url + "/sessions/"):
            return frame
    raise AssertionError(f"no viewer frame in {[f.url for f in page.frames]}")


def _states(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["data"] for m in found if m["data"].get("type") == "visual-runtime:state"]


def _result(found: list[dict[str, Any]], id_: int) -> dict[str, Any] | None:
    for m in found:
        if m["data"].get("type") == "visual-runtime:result" and m["data"].get("id") == id_:
            data: dict[str, Any] = m["data"]
            return data
    return None


async def test_embedded_viewer_posts_state_and_obeys_its_parent(
        embed_gateway: Gateway, pages: PageServer, browser: Browser) -> None:
    gw = embed_gateway
    session = await _session(gw)
    sid = session["session_id"]
    viewer = gw.url(f"/sessions/{sid}/?token={session['tokens']['control']}&embed=1")
    page = await browser.new_page(viewport={"width": 900, "height": 700})
    console = _console(page)
    try:
        await page.goto(f"{pages.allowed}/embed.html?src={quote(viewer, safe='')}"
                        f"&sibling={quote(pages.other + '/sibling.html', safe='')}")

        async def connected() -> dict[str, Any] | None:
            states = _states(await messages(page))
            return next((s for s in states if s["state"] == "connected"), None)

        state = await poll(connected, 30, "a 'connected' state message from the viewer")
        assert state["session_id"] == sid and state["version"] == 1, state
        assert state["transport"] in ("webrtc", "ws", "vnc"), state
        assert state["controller"] == "agent" and state["holds_control"] is False, state
        assert state["may_control"] is True, state
        found = await messages(page)
        assert {m["origin"] for m in found} == {gw.base_url}, found

        frame = _viewer_frame(page, gw)
        # minimal toolbar; allow="fullscreen" reaches the page
        assert await frame.locator("#btn-control").is_visible()
        assert await frame.locator("#btn-full").is_visible()
        for hidden in ("#btn-files", "#transport-select", "#btn-stats", "#btn-vnc"):
            assert not await frame.locator(hidden).is_visible(), hidden
        assert await frame.evaluate("document.fullscreenEnabled") is True

        # a frame of another origin posts a command to the viewer: dropped
        sibling = next(f for f in page.frames if f.url.startswith(pages.other))
        await sibling.evaluate("attack()")
        await poll(lambda: frame.evaluate("vrViewer.bridge.ignored >= 1"), 10,
                   "the viewer to drop the sibling's message")
        assert await frame.evaluate("vrViewer.bridge.commands") == 0
        assert await _controller(gw, sid) == "agent"

        # the parent takes control through the viewer...
        await page.evaluate("send('take-control', 1)")
        result = await poll(lambda: _awaited_result(page, 1), 20, "the take-control result")
        assert result["ok"] is True and result["command"] == "take-control", result
        assert await _controller(gw, sid) == "human"
        last = _states(await messages(page))[-1]
        assert last["controller"] == "human" and last["holds_control"] is True, last
        # ...and releases it
        await page.evaluate("send('release-control', 2)")
        result = await poll(lambda: _awaited_result(page, 2), 20, "the release-control result")
        assert result["ok"] is True, result
        assert await _controller(gw, sid) == "agent"
        last = _states(await messages(page))[-1]
        assert last["controller"] == "agent" and last["holds_control"] is False, last
        # an unknown command is answered, not obeyed
        await page.evaluate("send('stop-session', 3)")
        result = await poll(lambda: _awaited_result(page, 3), 20, "the unknown command's result")
        assert result["ok"] is False and "unknown command" in result["error"], result
        assert [m for m in console if "Content Security Policy" in m] == []
    finally:
        await page.close()
    await gw.stop(sid)


async def _awaited_result(page: Page, id_: int) -> dict[str, Any] | None:
    return _result(await messages(page), id_)


async def test_a_page_on_another_origin_is_refused(
        embed_gateway: Gateway, pages: PageServer, browser: Browser) -> None:
    gw = embed_gateway
    session = await _session(gw)
    sid = session["session_id"]
    whep = gw.url(f"/api/visual-sessions/{sid}/whep")
    try:
        for player in ("eyevinn", "whip-whep"):
            page = await browser.new_page()
            console = _console(page)
            try:
                await page.goto(f"{pages.other}/player.html")
                await page.evaluate("([k, u, t]) => play(k, u, t)",
                                    [player, whep, session["tokens"]["view"]])
                await page.wait_for_function("() => result.errors.length > 0", timeout=20_000)
                result = await page.evaluate("result")
                assert result["frames"] == 0, result
                assert any("Failed to fetch" in e for e in result["errors"]), result
                await poll(sync(partial(_logged, console, "blocked by CORS policy")), 10,
                           f"Chromium's CORS error for {player}")
            finally:
                await page.close()

        page = await browser.new_page()
        console = _console(page)
        viewer = gw.url(f"/sessions/{sid}/?token={session['tokens']['control']}&embed=1")
        try:
            await page.goto(f"{pages.other}/embed.html?src={quote(viewer, safe='')}")
            await poll(sync(partial(_logged, console, "frame-ancestors")), 20,
                       "Chromium's frame-ancestors refusal")
            frame = next(f for f in page.frames if f is not page.main_frame)
            assert not frame.url.startswith(gw.base_url + "/sessions/") or \
                await frame.evaluate("document.querySelectorAll('#bar').length") == 0
            assert await messages(page) == []
        finally:
            await page.close()
    finally:
        await gw.stop(sid)


@pytest.fixture
async def framable_gateway(tmp_path: Path, pages: PageServer) -> AsyncIterator[Gateway]:
    """Both origins may frame the viewer; only 127.0.0.1's is an allowed origin."""
    async for gw in in_process_gateway(tmp_path, apps=("xterm",),
                                       allowed_origins=(pages.allowed,),
                                       frame_ancestors=f"{pages.allowed} {pages.other}"):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


async def test_the_viewer_talks_only_to_allowed_origins(
        framable_gateway: Gateway, pages: PageServer, browser: Browser) -> None:
    gw = framable_gateway
    session = await _session(gw)
    sid = session["session_id"]
    try:
        for origin, talks, mode in ((pages.other, False, "1"), (pages.allowed, True, "bare")):
            viewer = gw.url(f"/sessions/{sid}/?token={session['tokens']['control']}&embed={mode}")
            page = await browser.new_page()
            try:
                await page.goto(f"{origin}/embed.html?src={quote(viewer, safe='')}")
                frame = await poll(sync(partial(_frame_at, page, gw.base_url)), 20,
                                   "the viewer frame")
                await frame.wait_for_function(
                    "() => window.vrViewer && vrViewer.state === 'connected'", timeout=30_000)
                target = await frame.evaluate("vrViewer.bridge.target")
                await page.evaluate("send('take-control', 7)")
                if talks:
                    assert target == pages.allowed
                    await poll(partial(_awaited_result, page, 7), 20, "the take-control result")
                    assert await _controller(gw, sid) == "human"
                    # ?embed=bare: no bar at all, the parent drives it
                    assert not await frame.locator("#bar").is_visible()
                    assert await frame.locator("#stage").is_visible()
                else:
                    assert target is None
                    # the viewer is connected: any state message would have been sent by now
                    await page.evaluate("new Promise((r) => setTimeout(r, 200))")
                    assert await messages(page) == []
                    assert await frame.evaluate("vrViewer.bridge.commands") == 0
                    assert await _controller(gw, sid) == "agent"
            finally:
                await page.close()
    finally:
        await gw.stop(sid)


def test_the_protocol_is_documented() -> None:
    """The message types the page speaks are the ones docs/cdp-and-embedding.md names."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cdp-and-embedding.md").read_text()
    source = (Path(__file__).resolve().parents[2] / "web" / "js" / "embed.js").read_text()
    for name in ("visual-runtime:state", "visual-runtime:result", "visual-runtime:command",
                 "take-control", "release-control", "get-state", "?embed=1", "embed=bare"):
        assert name in source, name
        assert name in doc, name
    code = [line for line in source.splitlines() if not line.lstrip().startswith("//")]
    assert all('"*"' not in line and "'*'" not in line for line in code)
    assert [line.strip() for line in code if "postMessage(" in line] == [
        "window.parent.postMessage(message, this.target);"]
