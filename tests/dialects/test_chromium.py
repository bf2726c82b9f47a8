"""OpenAI's pixel scrolling and side buttons, measured in the session's real Chromium.

A page in the shared folder logs every wheel event's ``deltaY`` and every
mouse button; on F9 it downloads the log into ``~/Downloads``. A scroll of
``scroll_y`` pixels must arrive as wheel deltas adding up to those pixels (whole
wheel clicks of ``PIXELS_PER_CLICK``), and ``click`` with ``button: "back"`` must
make Chromium go back a page (and ``forward`` forward again).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from tests.actions.helpers import act_ok, downloads, poll, screenshot
from tests.dialects.helpers import post_ok
from tests.gateway_fixtures import Gateway
from wire.dialects.openai import PIXELS_PER_CLICK

COLOR = (40, 90, 200)
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><style>
html, body { margin: 0; background: rgb(40, 90, 200); }
#tall { height: 20000px; }
</style></head><body><div id="tall"></div><script>
const log = [];
addEventListener("wheel", (e) => log.push({type: "wheel", dy: e.deltaY, dx: e.deltaX,
                                          mode: e.deltaMode}), {capture: true, passive: true});
addEventListener("mouseup", (e) => log.push({type: "mouseup", button: e.button}), true);
function download() {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([JSON.stringify({log, y: scrollY})],
                                        {type: "application/json"}));
  a.download = "REPORT";
  document.body.appendChild(a);
  a.click();
}
addEventListener("keydown", (e) => {
  if (e.key !== "F9") return;
  e.preventDefault();
  // report once smooth scrolling has come to rest
  let last = -1;
  const settle = () => { if (scrollY === last) download(); else { last = scrollY;
                                                                  setTimeout(settle, 300); } };
  settle();
}, true);
</script></body></html>
"""


async def _wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_openai_pixel_scroll_and_back_button_in_chromium(gateway: Gateway) -> None:
    gw = gateway
    session = await gw.create_running(resolution="1280x800")
    sid = session["session_id"]
    report_name = f"report-{secrets.token_hex(4)}.json"
    page = downloads(gw, sid) / "scroll.html"
    page.write_text(PAGE.replace("REPORT", report_name))
    page.chmod(0o644)

    async def pixel() -> tuple[int, ...]:
        return tuple(int(v) for v in (await screenshot(gw, sid))[700, 640])

    async def chromium_up() -> bool:
        return await pixel() != (0, 0, 0)

    async def loaded() -> bool:
        return await pixel() == COLOR

    await _wait_for(chromium_up, "Chromium's window")
    for attempt in range(3):
        await act_ok(gw, sid, action="left_click", coordinate=[640, 600])
        await act_ok(gw, sid, action="key", text="ctrl+l")
        await act_ok(gw, sid, action="type", text="file:///home/user/Downloads/scroll.html\n")
        try:
            await _wait_for(loaded, "the page", timeout=15.0)
            break
        except AssertionError:
            if attempt == 2:
                raise

    # ten wheel clicks down, then two up
    await post_ok(gw, sid, {"actions": [
        {"type": "scroll", "x": 640, "y": 500, "scroll_x": 0, "scroll_y": 10 * PIXELS_PER_CLICK},
        {"type": "scroll", "x": 640, "y": 500, "scroll_x": 0, "scroll_y": -2 * PIXELS_PER_CLICK},
        {"type": "click", "button": "left", "x": 640, "y": 500}]}, "openai")
    await act_ok(gw, sid, action="key", text="F9")
    path = downloads(gw, sid) / report_name

    def done() -> dict[str, Any] | None:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    report = await poll(done, timeout=30, what="the page's report")
    wheels = [e for e in report["log"] if e["type"] == "wheel"]  # Chromium coalesces some
    assert wheels and all(e["mode"] == 0 for e in wheels), wheels  # deltas in pixels
    down = sum(e["dy"] for e in wheels if e["dy"] > 0)
    up = sum(e["dy"] for e in wheels if e["dy"] < 0)
    # the wheel deltas Chromium reports add up to the pixels asked for
    assert (down, up) == (10 * PIXELS_PER_CLICK, -2 * PIXELS_PER_CLICK), wheels
    assert report["y"] == 8 * PIXELS_PER_CLICK
    assert [e["button"] for e in report["log"] if e["type"] == "mouseup"] == [0]

    # the side buttons are the browser's: back leaves the page, forward brings it back
    await post_ok(gw, sid, {"type": "click", "button": "back", "x": 640, "y": 500}, "openai")
    await _wait_for(lambda: _not(loaded), "the page to be left (back)")
    await post_ok(gw, sid, {"type": "click", "button": "forward", "x": 640, "y": 500}, "openai")
    await _wait_for(loaded, "the page to come back (forward)")


async def _not(check: Any) -> bool:
    return not await check()
