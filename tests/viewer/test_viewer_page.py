"""The viewer page in real headless Chromium against real sessions.

For each transport, forced with ``?transport=``: the page shows moving
frames; taking control makes agent actions 409; a click in the page, scaled
to ~0.6, lands on the intended remote pixel (checked with the agent's
``cursor_position``); typing in the page reaches the session's xterm
(checked exactly, through a file the typed command writes); releasing
control gives actions back to the agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.gateway_fixtures import Gateway

from .pages import SCREENSHOTS, open_viewer, picture_hash, picture_rect, poll, wait_connected

REMOTE_W, REMOTE_H = 1600, 900
TARGET = (301, 203)
"""A remote pixel inside the xterm (at +40+40), so keys typed next go to it."""


async def action(gw: Gateway, sid: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"), json=body,
                            headers=gw.auth) as resp:
        return resp.status, await resp.json()


async def control(gw: Gateway, sid: str) -> str:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/control"),
                           headers=gw.auth) as resp:
        data = await resp.json()
        assert resp.status == 200, data
        return str(data["controller"])


def client_point(rect: dict[str, float], x: int, y: int, letterbox: bool) -> tuple[int, int]:
    """Integer client pixel whose image is remote (x, y) at the page's scale."""
    scale = min(rect["width"] / REMOTE_W, rect["height"] / REMOTE_H)
    off_x = (rect["width"] - REMOTE_W * scale) / 2 if letterbox else 0.0
    off_y = (rect["height"] - REMOTE_H * scale) / 2 if letterbox else 0.0
    cx = rect["left"] + off_x + (x + 0.5) * scale
    cy = rect["top"] + off_y + (y + 0.5) * scale
    return round(cx), round(cy)


def expected_remote(rect: dict[str, float], cx: int, cy: int, letterbox: bool) -> tuple[int, int]:
    scale = min(rect["width"] / REMOTE_W, rect["height"] / REMOTE_H)
    off_x = (rect["width"] - REMOTE_W * scale) / 2 if letterbox else 0.0
    off_y = (rect["height"] - REMOTE_H * scale) / 2 if letterbox else 0.0
    return int((cx - rect["left"] - off_x) // scale), int((cy - rect["top"] - off_y) // scale)


async def shot(page: Page, name: str) -> None:
    """Save a screenshot of a main state for the docs (once: delete it to refresh)."""
    target = SCREENSHOTS / name
    if not target.exists():
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(target))


@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport", ["webrtc", "ws", "vnc"])
async def test_transport_end_to_end(light_gateway: Gateway, browser: Browser,
                                    transport: str) -> None:
    gw = light_gateway
    session = await gw.create_running()
    sid, token = session["session_id"], session["tokens"]["control"]
    page = await open_viewer(browser, gw, sid, token, transport=transport)
    await wait_connected(page, transport)

    # Moving frames: the agent types; the picture changes.
    before = await picture_hash(page)
    status, body = await action(gw, sid, {"action": "type", "text": "echo frames-move"})
    assert status == 200, body

    async def changed() -> bool:
        return await picture_hash(page) != before
    await poll(changed, 20, "the page to show new frames")
    if transport != "vnc":
        shown = await page.evaluate("vrViewer.transport.framesShown")
        assert shown >= 2
    await shot(page, f"viewer-{transport}.png")
    # Clear the half-typed line before the human types.
    status, body = await action(gw, sid, {"action": "key", "text": "ctrl+u"})
    assert status == 200, body

    # Take control from the page.
    await page.click("#btn-control")
    await page.wait_for_function("() => document.body.dataset.control === 'mine'", timeout=15000)
    assert await control(gw, sid) == "human"
    status, body = await action(gw, sid, {"action": "cursor_position"})
    assert status == 409, body
    await shot(page, f"viewer-{transport}-in-control.png")

    # A click at scale ~0.6 lands on the intended remote pixel.
    rect = await picture_rect(page)
    letterbox = transport != "vnc"  # noVNC sizes its canvas to the picture
    scale = min(rect["width"] / REMOTE_W, rect["height"] / REMOTE_H)
    assert 0.4 < scale < 0.9, rect
    cx, cy = client_point(rect, *TARGET, letterbox)
    expect = expected_remote(rect, cx, cy, letterbox)
    await page.mouse.click(cx, cy)

    # Typing in the page appears in the session's xterm (exact: it runs a command).
    marker = f"typed-{transport}"
    await page.keyboard.type(f"echo {marker}-OK > ~/{marker}.txt")
    await page.keyboard.press("Enter")
    typed = Path(gw.state_dir) / "sessions" / sid / "home" / f"{marker}.txt"

    async def written() -> bool:
        return typed.exists() and typed.read_text().strip() == f"{marker}-OK"
    await poll(written, 20, f"{typed} to be written by the typed command")

    # Release: agent actions work again, and the click landed where intended.
    await page.click("#btn-control")
    await page.wait_for_function("() => document.body.dataset.control === 'agent'", timeout=15000)
    assert await control(gw, sid) == "agent"
    status, body = await action(gw, sid, {"action": "cursor_position"})
    assert status == 200, body
    if transport == "vnc":
        # noVNC maps client->remote itself (and the release click moved nothing).
        assert abs(body["cursor"][0] - expect[0]) <= 1 and abs(body["cursor"][1] - expect[1]) <= 1
    else:
        assert tuple(body["cursor"]) == expect, (body, rect, (cx, cy))
        assert abs(expect[0] - TARGET[0]) <= 1 and abs(expect[1] - TARGET[1]) <= 1
    await page.close()
