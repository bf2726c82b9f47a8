"""Security headers of the viewer, and the viewer still working under its CSP.

* The page, its static files and the noVNC page carry a Content-Security-Policy
  (no ``'unsafe-inline'``, ``frame-ancestors 'none'`` by default, configurable),
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
* In real Chromium every transport (WebRTC, WebSocket + WebCodecs, noVNC) and
  the plain noVNC page connect and show frames with zero
  ``securitypolicyviolation`` events and no CSP console errors.
* Another origin cannot frame the page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page

from gateway.config import WEB_DIR
from gateway.security.csp import inline_hashes
from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes

COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI,
                               sample: e.sample, source: e.sourceFile, line: e.lineNumber});
});
"""


def _directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def _assert_tight(policy: str, frame_ancestors: list[str]) -> dict[str, list[str]]:
    d = _directives(policy)
    assert d["default-src"] == ["'self'"], policy
    assert d["object-src"] == ["'none'"] and d["base-uri"] == ["'none'"], policy
    assert d["frame-ancestors"] == frame_ancestors, policy
    assert d["connect-src"] == ["'self'"], policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, policy
    assert "*" not in policy.split(), policy
    return d


async def test_headers_on_pages_static_files_and_novnc(light_gateway: Gateway) -> None:
    gw = light_gateway
    created = await gw.create(resolution="640x480", enable_recording=False)
    sid, token = created["session_id"], created["tokens"]["view"]
    urls = [f"/sessions/{sid}/?token={token}", f"/sessions/{sid}/vnc/?token={token}",
            "/viewer/js/app.js", "/viewer/viewer.css", "/viewer/vendor/novnc/core/rfb.js",
            f"/sessions/{sid}/info?token={token}", "/viewer/js/nope.js",
            f"/sessions/{sid}/?token=wrong"]
    for url in urls:
        async with gw.http.get(gw.url(url)) as resp:
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", url
            assert resp.headers.get("Referrer-Policy") == "no-referrer", url
            assert resp.headers.get("X-Frame-Options") == "DENY", url
            directives = _assert_tight(resp.headers["Content-Security-Policy"], ["'none'"])
            if "/vnc/" in url:
                scripts, styles = inline_hashes(WEB_DIR / "vnc.html")
                assert scripts and styles
                assert set(scripts) <= set(directives["script-src"]), directives
                assert set(styles) <= set(directives["style-src"]), directives
            else:
                assert directives["script-src"] == ["'self'"], (url, directives)
    # the API carries nosniff too
    async with gw.http.get(gw.url("/api/visual-sessions"), headers=gw.auth) as resp:
        assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    await gw.stop(sid)


@pytest.fixture
async def framable_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",),
                                       frame_ancestors="'self' https://app.example"):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


async def test_frame_ancestors_is_configurable(framable_gateway: Gateway) -> None:
    gw = framable_gateway
    created = await gw.create(resolution="640x480", enable_recording=False)
    sid, token = created["session_id"], created["tokens"]["view"]
    async with gw.http.get(gw.url(f"/sessions/{sid}/?token={token}")) as resp:
        _assert_tight(resp.headers["Content-Security-Policy"], ["'self'", "https://app.example"])
        assert "X-Frame-Options" not in resp.headers
    await gw.stop(sid)


async def _violations(page: Page) -> list[dict[str, object]]:
    found: list[dict[str, object]] = await page.evaluate("window.__cspViolations || []")
    return found


@pytest.mark.parametrize("transport", ["webrtc", "ws", "vnc"])
async def test_viewer_works_under_its_csp(light_gateway: Gateway, browser: Browser,
                                          transport: str) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="800x600", enable_recording=False)
    sid, token = session["session_id"], session["tokens"]["control"]
    page = await browser.new_page(viewport={"width": 1000, "height": 700})
    console: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            console.append(msg.text)

    page.on("console", on_console)
    await page.add_init_script(COLLECT_VIOLATIONS)
    try:
        await page.goto(gw.url(f"/sessions/{sid}/?token={token}&transport={transport}"))
        # (a function, not an expression: Playwright evaluates a bare expression with eval(),
        # which this CSP forbids, on every poll)
        await page.wait_for_function(
            "() => window.vrViewer && vrViewer.state === 'connected' && vrViewer.transport"
            " && vrViewer.transport.framesShown > 0", timeout=30_000)
        assert await page.evaluate("vrViewer.transport.name") == transport
        # use the page's API paths too (info, control) so their fetches run under the CSP
        await page.evaluate("window.vrViewer && window.vrViewer.state")
        assert await _violations(page) == []
        csp_console = [m for m in console if "Content Security Policy" in m]
        assert csp_console == [], csp_console
    finally:
        await page.close()
    await gw.stop(sid)


async def test_novnc_page_works_under_its_csp(light_gateway: Gateway, browser: Browser) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="800x600", enable_recording=False)
    sid, token = session["session_id"], session["tokens"]["view"]
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    await page.add_init_script(COLLECT_VIOLATIONS)
    try:
        await page.goto(gw.url(f"/sessions/{sid}/vnc/?token={token}"))
        await page.wait_for_function(
            "() => document.getElementById('status').textContent === 'connected'",
            timeout=30_000)
        assert await _violations(page) == []
        assert [m for m in console if "Content Security Policy" in m] == []
    finally:
        await page.close()
    await gw.stop(sid)


async def test_other_origin_cannot_frame_the_viewer(light_gateway: Gateway,
                                                    browser: Browser) -> None:
    gw = light_gateway
    created = await gw.create(resolution="640x480", enable_recording=False)
    sid, token = created["session_id"], created["tokens"]["view"]
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    try:
        # about:blank's content is another origin than the gateway
        await page.set_content(f'<iframe id="f" src="{gw.url(f"/sessions/{sid}/?token={token}")}">'
                               "</iframe>")
        deadline = time.monotonic() + 20
        while not any("frame-ancestors" in m for m in console):
            assert time.monotonic() < deadline, f"the viewer was framed; console: {console}"
            await asyncio.sleep(0.1)
        for frame in page.frames:
            if frame is not page.main_frame:
                assert await _frame_is_empty(frame), frame.url
    finally:
        await page.close()
    await gw.stop(sid)


async def _frame_is_empty(frame: object) -> bool:
    try:
        count: int = await frame.evaluate(  # type: ignore[attr-defined]
            "document.querySelectorAll('#bar').length")
    except Exception:  # noqa: BLE001 - a blocked frame cannot be evaluated at all
        return True
    return count == 0
