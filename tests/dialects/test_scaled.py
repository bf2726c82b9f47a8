"""Scaled sessions (``agent_resolution``), bad dialect input and control, on a live session.

The pointer is read on the session's X server: every corner and the centre of
the agent's picture must land on exactly the mapped screen pixel, both through
the Anthropic and the OpenAI shapes, and read back as the agent pixel. Bad input
is a 422 naming the body's field, and nothing reaches X.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.actions.helpers import control, downloads, png_rgb, read_text, wait_shell_ready
from tests.dialects.helpers import image_of, pointer, post, post_ok, session_display
from tests.gateway_fixtures import Gateway
from wire.dialects.openai import MAX_BATCH
from wire.scaling import Scale

SCREEN = (1600, 900)


@pytest.mark.parametrize("agent", [(1280, 720), (1024, 768)])
async def test_corners_and_centre_land_on_the_mapped_pixel(light_gateway: Gateway,
                                                          agent: tuple[int, int]) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="1600x900", agent_resolution=f"{agent[0]}x{agent[1]}")
    assert session["agent_resolution"] == f"{agent[0]}x{agent[1]}"
    sid = session["session_id"]
    scale = Scale(*agent, *SCREEN)
    aw, ah = agent
    points = [(0, 0), (aw - 1, 0), (0, ah - 1), (aw - 1, ah - 1), (aw // 2, ah // 2)]
    expected_screen = {(0, 0): (0, 0), (aw - 1, 0): (1599, 0), (0, ah - 1): (0, 899),
                       (aw - 1, ah - 1): (1599, 899)}
    disp = session_display(gw, sid)
    try:
        for x, y in points:
            result = await post_ok(gw, sid, {"action": "mouse_move", "coordinate": [x, y]})
            assert pointer(disp) == scale.point_to_screen(x, y)
            if (x, y) in expected_screen:
                assert pointer(disp) == expected_screen[(x, y)]
            assert result["cursor"] == [x, y]  # read back in agent pixels
            # the same point through the other shapes
            await post_ok(gw, sid, {"action": "mouse_move", "coordinate": [aw // 3, ah // 3]})
            await post_ok(gw, sid, {"type": "move", "x": x, "y": y}, "openai")
            assert pointer(disp) == scale.point_to_screen(x, y)
            await post_ok(gw, sid, {"name": "left_click", "input": {"coordinate": [x, y]}})
            assert pointer(disp) == scale.point_to_screen(x, y)
            assert (await post_ok(gw, sid, {"action": "cursor_position"}))["cursor"] == [x, y]
        if agent == (1280, 720):  # the loop ended on the centre
            assert pointer(disp) == (800, 450)

        # screenshots come at the agent's size; the full size on request
        assert image_of(await post_ok(gw, sid, {"action": "screenshot"})).shape == (ah, aw, 3)
        async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                               headers=gw.auth) as resp:
            assert resp.status == 200
            assert png_rgb(await resp.read()).shape == (ah, aw, 3)
        async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot?size=full"),
                               headers=gw.auth) as resp:
            assert png_rgb(await resp.read()).shape == (900, 1600, 3)
        # a zoom of the whole agent picture fills the agent's budget
        zoom = image_of(await post_ok(gw, sid, {"action": "zoom", "region": [0, 0, aw, ah]}))
        assert zoom.shape == (ah, aw, 3)

        # out of the agent's picture (though inside the screen): 422, the pointer stays
        before = pointer(disp)
        for body, dialect, field in (
                ({"action": "mouse_move", "coordinate": [aw, 0]}, "", "coordinate"),
                ({"action": "left_click", "coordinate": [0, ah]}, "", "coordinate"),
                ({"action": "zoom", "region": [0, 0, aw + 1, ah]}, "", "region"),
                ({"name": "left_click_drag", "input": {"start_coordinate": [0, 0],
                                                       "coordinate": [aw, 5]}}, "", "coordinate"),
                ({"type": "move", "x": aw, "y": 0}, "openai", "x"),
                ({"type": "drag", "path": [{"x": 1, "y": 1}, {"x": 1, "y": ah}]}, "openai",
                 "path[1].y")):
            status, problem = await post(gw, sid, body, dialect)
            assert status == 422, (body, problem)
            assert [e["field"] for e in problem["errors"]] == [field]
        assert pointer(disp) == before
    finally:
        disp.close()


async def test_bad_dialect_input_is_refused_and_nothing_reaches_x(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="1024x768")
    sid = session["session_id"]
    await wait_shell_ready(gw, sid)
    folder = downloads(gw, sid)
    disp = session_display(gw, sid)
    try:
        await post_ok(gw, sid, {"action": "mouse_move", "coordinate": [300, 200]})
        cases: list[tuple[Any, str, str]] = [
            ({"action": "left_click", "key": "shift", "text": "ctrl"}, "", "key"),
            ({"action": "left_click", "x": 5, "y": 5}, "", "x"),
            ({"name": "key", "input": {"text": "a", "repeat": 0}}, "", "repeat"),
            ({"name": "type", "input": {"text": "a"}, "toolset_name": "browser"}, "",
             "toolset_name"),
            ({"type": "click", "button": "left", "x": 5, "y": 5}, "", "action"),
            ({"action": "left_click", "coordinate": [5, 5]}, "openai", "type"),
            ({"type": "click", "button": "left", "x": 5, "y": 5, "coordinate": [5, 5]}, "openai",
             "coordinate"),
            ({"type": "keypress", "keys": ["CTRL", "NOSUCHKEY"]}, "openai", "keys"),
            ({"actions": [{"type": "wait"}] * (MAX_BATCH + 1)}, "openai", "actions"),
            # a batch whose last action is bad: the first ones must not run either
            ({"actions": [{"type": "move", "x": 10, "y": 10},
                          {"type": "type", "text": "echo ran > ~/Downloads/ran.txt"},
                          {"type": "keypress", "keys": ["ENTER"]},
                          {"type": "move", "x": 1024, "y": 0}]}, "openai", "actions[3].x"),
        ]
        for body, dialect, field in cases:
            status, problem = await post(gw, sid, body, dialect)
            assert status == 422, (body, problem)
            assert problem["type"].endswith("/validation-error"), problem
            assert [e["field"] for e in problem["errors"]] == [field], problem
        assert pointer(disp) == (300, 200)
        assert read_text(folder / "ran.txt") is None

        # a human holds control: 409, with where the batch stopped
        token = session["tokens"]["control"]
        status, _ = await control(gw, sid, "take", token)
        assert status == 200
        status, problem = await post(gw, sid, {"actions": [{"type": "move", "x": 9, "y": 9}]},
                                     "openai")
        assert status == 409 and problem["type"].endswith("/human-in-control")
        assert (problem["index"], problem["completed"]) == (0, 0)
        status, problem = await post(gw, sid, {"action": "zoom", "region": [0, 0, 10, 10]})
        assert status == 409
        assert pointer(disp) == (300, 200)
        await control(gw, sid, "release", token)
        await post_ok(gw, sid, {"type": "move", "x": 9, "y": 9}, "openai")
        assert pointer(disp) == (9, 9)
    finally:
        disp.close()


async def test_agent_resolution_is_validated(light_gateway: Gateway) -> None:
    gw = light_gateway
    for value in ("1601x900", "1600x901", "63x64", "1280", 1280, "1280x720x1"):
        async with gw.http.post(gw.url("/api/visual-sessions"), headers=gw.auth,
                                json={"resolution": "1600x900", "agent_resolution": value}) as resp:
            problem = await resp.json()
            assert resp.status == 422, (value, problem)
            assert [e["field"] for e in problem["errors"]] == ["agent_resolution"]
    async with gw.http.get(gw.url("/api/visual-sessions"), headers=gw.auth) as resp:
        assert (await resp.json())["sessions"] == []
