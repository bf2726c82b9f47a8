"""Helpers to drive the viewer page from tests and the benchmark."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from tests.gateway_fixtures import Gateway

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def open_viewer(browser: Browser, gw: Gateway, sid: str, token: str, *,
                      transport: str | None = None, width: int = 1000,
                      height: int = 640) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    query = f"?token={token}" + (f"&transport={transport}" if transport else "")
    await page.goto(gw.url(f"/sessions/{sid}/{query}"))
    return page


async def wait_connected(page: Page, transport: str | None = None, timeout_s: float = 30) -> str:
    """Wait until the page shows frames; return the transport in use."""
    # a function, not a bare expression: Playwright eval()s an expression on every poll,
    # which the page's CSP (no 'unsafe-eval') refuses
    await page.wait_for_function(
        "() => window.vrViewer && vrViewer.state === 'connected' && vrViewer.transport"
        " && vrViewer.transport.framesShown > 0", timeout=timeout_s * 1000)
    name: str = await page.evaluate("vrViewer.transport.name")
    if transport is not None:
        assert name == transport, await page.evaluate("vrViewer.attempts")
    return name


async def picture_rect(page: Page) -> dict[str, float]:
    """Client rect of the element that shows the picture (noVNC: its canvas)."""
    rect: dict[str, float] = await page.evaluate("""() => {
        const t = vrViewer.transport;
        const el = t.name === 'vnc' ? t.canvas : t.element;
        const r = el.getBoundingClientRect();
        return {left: r.left, top: r.top, width: r.width, height: r.height};
    }""")
    return rect


async def picture_hash(page: Page) -> str:
    """A digest of what the page shows right now (canvas or video pixels)."""
    digest: str = await page.evaluate("""() => {
        const t = vrViewer.transport;
        const src = t.name === 'vnc' ? t.canvas : t.element;
        const w = 320, h = 180;
        const c = document.createElement('canvas'); c.width = w; c.height = h;
        const ctx = c.getContext('2d', {willReadFrequently: true});
        ctx.drawImage(src, 0, 0, w, h);
        const d = ctx.getImageData(0, 0, w, h).data;
        let a = 0, b = 0;
        for (let i = 0; i < d.length; i += 4) {
            a = (a * 31 + d[i] + d[i+1] * 7 + d[i+2] * 13) | 0;
            b = (b + d[i]) | 0;
        }
        return a + ':' + b;
    }""")
    return digest


async def poll(check: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Await *check()* until it returns something truthy, or fail after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)


async def controller_label(page: Page) -> str:
    text: str = await page.locator("#controller").inner_text()
    return text
