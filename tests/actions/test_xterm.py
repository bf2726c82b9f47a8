"""Agent actions change the real screen: typing into the session's xterm.

The xterm runs bash in the app sandbox with ``~/Downloads`` bound to the
session's shared folder on the host, so what was typed is checked exactly by
reading the files the commands write.
"""

from __future__ import annotations

import base64
import io

from tests.actions.helpers import (
    XTERM_POINT,
    act,
    act_ok,
    downloads,
    poll,
    read_text,
    shell,
    wait_shell_ready,
)
from tests.gateway_fixtures import Gateway


def _png_size(png: bytes) -> tuple[int, int]:
    buf = io.BytesIO(png)
    assert buf.read(8) == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


async def test_typing_runs_commands_exactly(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="1024x768")
    sid = session["session_id"]
    await wait_shell_ready(gw, sid)
    folder = downloads(gw, sid)

    await shell(gw, sid, "echo marker > ~/Downloads/x.txt")
    assert await poll(lambda: read_text(folder / "x.txt"), what="x.txt") == "marker\n"

    # Unicode (accents, symbols, CJK, emoji) typed through spare keycodes.
    text = "héllo wörld ✓ Ωμέγα 日本語 €£ 🙂"
    await shell(gw, sid, f"printf '%s\\n' '{text}' > ~/Downloads/u.txt")
    assert await poll(lambda: read_text(folder / "u.txt"), what="u.txt") == text + "\n"

    # A long string crosses many gated chunks; no character may be dropped.
    long = "".join(f"{i:04d}abcdefghijklmnopqrstuvwxyz" for i in range(40))
    assert len(long) > 1000
    await shell(gw, sid, f"echo {long} > ~/Downloads/long.txt")
    got = await poll(lambda: read_text(folder / "long.txt"), what="long.txt")
    assert got == long + "\n"

    # Newlines in `type` are Return presses: two commands in one action.
    await act_ok(gw, sid, action="mouse_move", coordinate=XTERM_POINT)
    await act_ok(gw, sid, action="type",
                 text="echo one > ~/Downloads/a.txt\necho two > ~/Downloads/b.txt\n")
    assert await poll(lambda: read_text(folder / "b.txt"), what="b.txt") == "two\n"
    assert read_text(folder / "a.txt") == "one\n"


async def test_key_combos_reach_the_shell(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="1024x768")
    sid = session["session_id"]
    await wait_shell_ready(gw, sid)
    folder = downloads(gw, sid)
    await act_ok(gw, sid, action="mouse_move", coordinate=XTERM_POINT)
    # Type garbage, clear the line with ctrl+u (readline), then a real command.
    await act_ok(gw, sid, action="type", text="this is not a command")
    await act_ok(gw, sid, action="key", text="ctrl+u")
    await act_ok(gw, sid, action="type", text="echo cleared > ~/Downloads/k.txt")
    # ctrl+a jumps to the start of the line: prefix the command with a space-free word.
    await act_ok(gw, sid, action="key", text="ctrl+a")
    await act_ok(gw, sid, action="type", text="true && ")
    await act_ok(gw, sid, action="key", text="Return")
    assert await poll(lambda: read_text(folder / "k.txt"), what="k.txt") == "cleared\n"
    # Several combos in one action run in order; shift+Tab style names parse.
    await act_ok(gw, sid, action="type", text="echo seq")
    await act_ok(gw, sid, action="key", text="BackSpace BackSpace BackSpace e q")
    await act_ok(gw, sid, action="type", text=" > ~/Downloads/s.txt")
    await act_ok(gw, sid, action="key", text="KP_Enter")
    assert await poll(lambda: read_text(folder / "s.txt"), what="s.txt") == "eq\n"


async def test_screenshot_and_cursor(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    data = await act_ok(gw, sid, action="screenshot")
    assert _png_size(base64.b64decode(data["base64_image"])) == (640, 480)
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        assert _png_size(await resp.read()) == (640, 480)
    moved = await act_ok(gw, sid, action="mouse_move", coordinate=[639, 479])
    assert moved["cursor"] == [639, 479]
    assert (await act_ok(gw, sid, action="cursor_position"))["cursor"] == [639, 479]
    clicked = await act_ok(gw, sid, action="left_click", coordinate=[10, 20])
    assert clicked["cursor"] == [10, 20]
    dragged = await act_ok(gw, sid, action="left_click_drag", start_coordinate=[100, 100],
                           coordinate=[200, 150])
    assert dragged["cursor"] == [200, 150]
    for name in ("right_click", "middle_click", "double_click", "triple_click",
                 "left_mouse_down", "left_mouse_up"):
        await act_ok(gw, sid, action=name)
    await act_ok(gw, sid, action="scroll", coordinate=[320, 240], scroll_direction="down",
                 scroll_amount=3)
    await act_ok(gw, sid, action="hold_key", text="shift", duration=0.1)
    await act_ok(gw, sid, action="wait", duration=0.1)
    # The screen is 640x480: the first pixel outside is refused, nothing moves.
    status, problem = await act(gw, sid, action="mouse_move", coordinate=[640, 10])
    assert status == 422
    assert problem["errors"][0]["field"] == "coordinate"
    assert (await act_ok(gw, sid, action="cursor_position"))["cursor"] == [320, 240]
