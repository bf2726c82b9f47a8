"""Each upstream dialect's recorded bodies against a live session, effects read on X.

Real parts: the in-process gateway, the local backend's light session (Xvfb +
xterm), the runtime agent. The pointer is read from the session's own X server
(python-xlib on its socket), typed text comes back through the shared folder
(the shell in the xterm writes files to ``~/Downloads``), and zoomed pixels are
compared with the screenshot's.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from gateway.media.imaging import fit_within
from tests.actions.helpers import downloads, png_rgb, poll, read_text, wait_shell_ready
from tests.dialects.fixtures import calls
from tests.dialects.helpers import (
    buttons_down,
    image_of,
    pointer,
    post_ok,
    session_display,
)
from tests.gateway_fixtures import Gateway
from tests.webrtc.xsession import pressed_keycodes

SIZE = (1024, 768)


async def _session(gw: Gateway, **extra: Any) -> str:
    session = await gw.create_running(resolution=f"{SIZE[0]}x{SIZE[1]}", **extra)
    sid = str(session["session_id"])
    await wait_shell_ready(gw, sid)
    return sid


def _zoom_matches_screenshot(zoom: np.ndarray, shot: np.ndarray,
                             region: list[int], budget: tuple[int, int]) -> None:
    x0, y0, x1, y1 = region
    assert zoom.shape[:2][::-1] == fit_within(x1 - x0, y1 - y0, *budget)
    # the zoom, shrunk back to the region's size, is the screenshot's region
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(zoom), format="rgb24")
    small = frame.reformat(width=x1 - x0, height=y1 - y0, format="rgb24").to_ndarray()
    crop = shot[y0:y1, x0:x1].astype(int)
    assert crop.std() > 5, "the region shows nothing to compare (blank screen)"
    assert np.abs(small.astype(int) - crop).mean() < 12


async def test_anthropic_computer_tools_unchanged(light_gateway: Gateway) -> None:
    gw = light_gateway
    sid = await _session(gw)
    folder = downloads(gw, sid)
    disp = session_display(gw, sid)
    try:
        # computer_20241022: clicks at the pointer, a drag from the pointer
        c = calls("computer_20241022")
        assert (await post_ok(gw, sid, c["mouse_move"]))["cursor"] == [300, 200]
        assert pointer(disp) == (300, 200)
        await post_ok(gw, sid, c["left_click"])
        await post_ok(gw, sid, c["type"])
        await post_ok(gw, sid, c["key"])
        assert await poll(lambda: read_text(folder / "a20241022.txt")) == "a20241022\n"
        assert (await post_ok(gw, sid, c["cursor_position"]))["cursor"] == [300, 200]
        await post_ok(gw, sid, c["left_click_drag"])
        assert pointer(disp) == (420, 260) and buttons_down(disp) == 0
        assert image_of(await post_ok(gw, sid, c["screenshot"])).shape == (768, 1024, 3)

        # computer_20250124: click modifiers as `key`, scroll_amount 0, mouse down/up
        c = calls("computer_20250124")
        await post_ok(gw, sid, c["left_click_with_key"])
        assert pointer(disp) == (310, 210) and pressed_keycodes(disp) == []
        await post_ok(gw, sid, c["triple_click"])
        await post_ok(gw, sid, c["scroll_zero"])
        assert pointer(disp) == (330, 230)
        await post_ok(gw, sid, c["scroll_with_text"])
        assert pointer(disp) == (340, 240) and pressed_keycodes(disp) == []
        await post_ok(gw, sid, c["left_mouse_down"])
        assert buttons_down(disp) != 0
        await post_ok(gw, sid, c["left_mouse_up"])
        assert buttons_down(disp) == 0
        await post_ok(gw, sid, c["hold_key"])
        await post_ok(gw, sid, c["wait"])
        await post_ok(gw, sid, {"action": "mouse_move", "coordinate": [300, 200]})
        await post_ok(gw, sid, c["type"])
        await post_ok(gw, sid, c["key"])
        assert await poll(lambda: read_text(folder / "b20250124.txt")) == "b20250124\n"

        # computer_20251124: drag with a start, zoom
        c = calls("computer_20251124")
        await post_ok(gw, sid, c["left_click_drag"])
        assert pointer(disp) == (260, 300) and buttons_down(disp) == 0
        await post_ok(gw, sid, c["mouse_move"])
        await post_ok(gw, sid, c["type"])
        await post_ok(gw, sid, c["key"])
        assert await poll(lambda: read_text(folder / "c20251124.txt")) == "c20251124\n"
        shot = image_of(await post_ok(gw, sid, {"action": "screenshot"}))
        zoom = image_of(await post_ok(gw, sid, c["zoom"]))
        _zoom_matches_screenshot(zoom, shot, c["zoom"]["region"], SIZE)
        await post_ok(gw, sid, c["double_click"])
        assert pointer(disp) == (350, 250)

        # computer_toolset_20260801: whole tool_use blocks, `key` with `repeat`
        c = calls("computer_toolset_20260801")
        for name in ("mouse_move", "type", "key_repeat", "type_rest", "key"):
            await post_ok(gw, sid, c[name])
        # "echo d20260801xx", two BackSpaces, then the redirect: exactly two removed
        assert await poll(lambda: read_text(folder / "d20260801.txt")) == "d20260801\n"
        await post_ok(gw, sid, c["left_click_drag_modifiers"])
        assert pointer(disp) == (200, 180) and buttons_down(disp) == 0
        assert pressed_keycodes(disp) == []
        await post_ok(gw, sid, c["left_click"])
        await post_ok(gw, sid, c["scroll"])
        assert (await post_ok(gw, sid, c["cursor_position"]))["cursor"] == [302, 202]
        shot = image_of(await post_ok(gw, sid, c["screenshot"]))
        zoom = image_of(await post_ok(gw, sid, c["zoom"]))
        _zoom_matches_screenshot(zoom, shot, c["zoom"]["input"]["region"], SIZE)
        await post_ok(gw, sid, c["wait"])
    finally:
        disp.close()


def _output_image(result: dict[str, Any]) -> Any:
    output = result["output"]
    assert output["type"] == "computer_screenshot"
    prefix = "data:image/png;base64,"
    assert output["image_url"].startswith(prefix)
    return png_rgb(base64.b64decode(output["image_url"][len(prefix):]))


async def test_openai_computer_use_unchanged(light_gateway: Gateway) -> None:
    gw = light_gateway
    sid = await _session(gw)
    folder = downloads(gw, sid)
    disp = session_display(gw, sid)
    try:
        c = calls("computer_use_preview")
        result = await post_ok(gw, sid, c["move"], "openai")
        assert result["cursor"] == [300, 200] and pointer(disp) == (300, 200)
        assert _output_image(result).shape == (768, 1024, 3)
        await post_ok(gw, sid, c["click_left"], "openai")
        assert pointer(disp) == (305, 205)
        await post_ok(gw, sid, c["type"], "openai")
        await post_ok(gw, sid, c["keypress"], "openai")
        assert await poll(lambda: read_text(folder / "e_preview.txt")) == "e_preview\n"
        await post_ok(gw, sid, c["double_click"], "openai")
        assert pointer(disp) == (310, 210)
        await post_ok(gw, sid, c["scroll"], "openai")
        assert pointer(disp) == (320, 220)
        await post_ok(gw, sid, c["drag"], "openai")
        assert pointer(disp) == (200, 160) and buttons_down(disp) == 0
        await post_ok(gw, sid, c["click_back"], "openai")
        assert pointer(disp) == (330, 230)
        await post_ok(gw, sid, c["wait"], "openai")
        await post_ok(gw, sid, c["screenshot"], "openai")

        # the GA tool's batch: in order, keys held on pointer actions, none left down
        c = calls("computer")
        result = await post_ok(gw, sid, c["batch"], "openai")
        assert result["actions"] == 8 and result["cursor"] == [320, 225]
        assert await poll(lambda: read_text(folder / "f_ga.txt")) == "f_ga\n"
        assert pointer(disp) == (320, 225) and pressed_keycodes(disp) == []
        result = await post_ok(gw, sid, c["actions_only"], "openai")
        assert result["actions"] == 4 and pointer(disp) == (300, 200)
        assert pressed_keycodes(disp) == [] and buttons_down(disp) == 0
        # last: a wheel click pastes the selection into the shell, so nothing types after it
        await post_ok(gw, sid, calls("computer_use_preview")["click_wheel"], "openai")
        assert pointer(disp) == (340, 240)
    finally:
        disp.close()
