"""Agent actions on a real page in the session's Chromium.

Sessions cannot reach the host network, so the test writes a page into the
session's shared folder and the agent opens it through Chromium's address
bar (``ctrl+l``, ``file:///home/user/Downloads/...``). The page records every
click, key, wheel and text input with screen coordinates; on F9 it downloads
a JSON report into ``~/Downloads``, which the test reads on the host.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from tests.actions.helpers import act, act_ok, downloads, poll, screenshot
from tests.gateway_fixtures import Gateway

PAGE_COLOR = (12, 200, 99)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>recorder</title>
<style>
html, body { margin: 0; height: 100%; background: rgb(12, 200, 99); }
#field { position: fixed; left: 0; top: 0; width: 100%; height: 260px; font-size: 30px;
         box-sizing: border-box; }
#pad { position: fixed; left: 0; top: 260px; right: 0; bottom: 0; }
</style></head>
<body><input id="field" autocomplete="off"><div id="pad"></div>
<script>
const log = [];
const point = (e) => ({x: e.screenX, y: e.screenY, button: e.button, target: e.target.id,
                       shift: e.shiftKey, ctrl: e.ctrlKey});
for (const type of ["mousedown", "mouseup", "click", "dblclick", "auxclick", "contextmenu"]) {
  addEventListener(type, (e) => {
    log.push({type, ...point(e), detail: e.detail});
    if (type === "contextmenu") e.preventDefault();
  }, true);
}
addEventListener("wheel", (e) => log.push({type: "wheel", dx: Math.sign(e.deltaX),
                                          dy: Math.sign(e.deltaY), x: e.screenX,
                                          y: e.screenY}), {capture: true, passive: true});
addEventListener("keydown", (e) => {
  if (e.key === "F9") {
    e.preventDefault();
    const report = {log, value: document.getElementById("field").value};
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([JSON.stringify(report)],
                                          {type: "application/json"}));
    a.download = "REPORT_NAME";
    document.body.appendChild(a);
    a.click();
    return;
  }
  log.push({type: "keydown", key: e.key, ctrl: e.ctrlKey, shift: e.shiftKey, alt: e.altKey,
            meta: e.metaKey});
  if (e.ctrlKey || e.altKey) e.preventDefault();
}, true);
</script></body></html>
"""


async def _open_page(gw: Gateway, sid: str) -> str:
    """Write the recorder page into the shared folder, open it; return the report name."""
    name = f"report-{secrets.token_hex(4)}.json"
    page = downloads(gw, sid) / "page.html"
    page.write_text(PAGE.replace("REPORT_NAME", name))
    page.chmod(0o644)

    async def pixel() -> tuple[int, ...]:
        return tuple(int(v) for v in (await screenshot(gw, sid))[700, 640])

    async def chromium_up() -> bool:
        # The session is running once X is; Chromium's window (about:blank is
        # white) shows up a moment later.
        return await pixel() != (0, 0, 0)

    async def loaded() -> bool:
        return await pixel() == PAGE_COLOR

    await _poll_async(chromium_up, "Chromium's window")
    # Focus Chromium (it fills the screen), then type the address. On a busy
    # machine Chromium may still be settling its first window (its omnibox can
    # take focus late and swallow the first keys), so retry as a user would.
    for attempt in range(3):
        await act_ok(gw, sid, action="left_click", coordinate=[640, 600])
        await act_ok(gw, sid, action="key", text="ctrl+l")
        await act_ok(gw, sid, action="type", text="file:///home/user/Downloads/page.html\n")
        try:
            await _poll_async(loaded, "the recorder page", timeout=15.0)
            return name
        except AssertionError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _poll_async(check: Any, what: str, timeout: float = 30.0) -> None:
    import asyncio
    import time
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _report(gw: Gateway, sid: str, name: str) -> dict[str, Any]:
    await act_ok(gw, sid, action="key", text="F9")
    path: Path = downloads(gw, sid) / name

    def done() -> dict[str, Any] | None:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    report: dict[str, Any] = await poll(done, timeout=30, what=f"the report {name}")
    return report


def _events(report: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e for e in report["log"] if e["type"] == type_]


def _calibrate(report: dict[str, Any], first: tuple[int, int]) -> dict[str, Any]:
    """Shift the page's screen coordinates so the first mouse event is at *first*.

    Chromium reports ``screenX/Y`` from where it believes its window is; the
    window manager's frame moves the client by a pixel or so. The offset must
    be small and the same for every event, so positions stay exact relative
    to each other.
    """
    mouse = [e for e in report["log"] if "x" in e]
    dx, dy = first[0] - mouse[0]["x"], first[1] - mouse[0]["y"]
    assert abs(dx) <= 4 and abs(dy) <= 4, (dx, dy)
    for e in mouse:
        e["x"] += dx
        e["y"] += dy
    return report


async def test_clicks_keys_scroll_and_text_on_a_page(gateway: Gateway) -> None:
    gw = gateway
    session = await gw.create_running(resolution="1280x800")
    sid = session["session_id"]
    name = await _open_page(gw, sid)

    # Text: click into the input and type Unicode.
    await act_ok(gw, sid, action="left_click", coordinate=[300, 150])
    text = "Grüße ✓ 日本 🙂 done"
    await act_ok(gw, sid, action="type", text=text)
    # A drag right after a triple click lost its release in Chromium (see the report).
    await act_ok(gw, sid, action="left_click_drag", start_coordinate=[600, 450],
                 coordinate=[700, 650])
    await act_ok(gw, sid, action="left_click", coordinate=[500, 500])
    await act_ok(gw, sid, action="right_click", coordinate=[510, 520])
    await act_ok(gw, sid, action="middle_click", coordinate=[520, 540])
    await act_ok(gw, sid, action="double_click", coordinate=[530, 560])
    await act_ok(gw, sid, action="triple_click", coordinate=[540, 580])
    await act_ok(gw, sid, action="left_click", coordinate=[550, 600], text="shift")
    await act_ok(gw, sid, action="scroll", coordinate=[800, 500], scroll_direction="down",
                 scroll_amount=2)
    await act_ok(gw, sid, action="scroll", coordinate=[800, 500], scroll_direction="up",
                 scroll_amount=1)
    await act_ok(gw, sid, action="key", text="ctrl+shift+x")
    await act_ok(gw, sid, action="key", text="shift+a")
    await act_ok(gw, sid, action="key", text="Escape")
    report = _calibrate(await _report(gw, sid, name), (300, 150))

    assert report["value"] == text
    clicks = [(e["x"], e["y"], e["detail"], e["shift"]) for e in _events(report, "click")]
    assert clicks == [(300, 150, 1, False), (700, 650, 1, False), (500, 500, 1, False),
                      (530, 560, 1, False), (530, 560, 2, False), (540, 580, 1, False),
                      (540, 580, 2, False), (540, 580, 3, False), (550, 600, 1, True)]
    assert [(e["x"], e["y"]) for e in _events(report, "contextmenu")] == [(510, 520)]
    assert [(e["x"], e["y"], e["button"]) for e in _events(report, "auxclick")] == [
        (510, 520, 2), (520, 540, 1)]
    assert [(e["x"], e["y"]) for e in _events(report, "dblclick")] == [(530, 560), (540, 580)]
    downs = _events(report, "mousedown")
    ups = _events(report, "mouseup")
    assert (downs[1]["x"], downs[1]["y"]) == (600, 450)
    assert (ups[1]["x"], ups[1]["y"]) == (700, 650)
    wheels = _events(report, "wheel")
    assert {(w["x"], w["y"]) for w in wheels} == {(800, 500)}
    assert [w["dy"] for w in wheels] == [1, 1, -1]
    keys = [(e["key"], e["ctrl"], e["shift"]) for e in _events(report, "keydown")]
    # Modifier keydowns are reported too; the combos arrive with their modifiers.
    assert ("X", True, True) in keys
    assert ("A", False, True) in keys
    assert keys[-1] == ("Escape", False, False)
    assert keys.index(("X", True, True)) < keys.index(("A", False, True))


async def test_out_of_screen_coordinates_are_refused_and_change_nothing(
        gateway: Gateway) -> None:
    gw = gateway
    session = await gw.create_running(resolution="1280x800")
    sid = session["session_id"]
    name = await _open_page(gw, sid)
    for body in ({"action": "left_click", "coordinate": [1280, 10]},
                 {"action": "left_click", "coordinate": [10, 800]},
                 {"action": "left_click", "coordinate": [-1, 10]},
                 {"action": "left_click_drag", "start_coordinate": [0, 0],
                  "coordinate": [5000, 5]},
                 {"action": "scroll", "coordinate": [99999, 5], "scroll_direction": "down",
                  "scroll_amount": 1}):
        status, problem = await act(gw, sid, **body)
        assert status == 422, problem
        assert problem["errors"][0]["field"] in ("coordinate", "start_coordinate")
    await act_ok(gw, sid, action="left_click", coordinate=[1200, 700])
    await act_ok(gw, sid, action="left_click", coordinate=[1270, 790])
    report = _calibrate(await _report(gw, sid, name), (1200, 700))
    assert [(e["x"], e["y"]) for e in _events(report, "click")] == [(1200, 700), (1270, 790)]
    assert _events(report, "wheel") == []
