"""wire.dialects: upstream bodies -> canonical actions (pure; the live effects are in test_live.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dialects.fixtures import ANTHROPIC_TOOLS, OPENAI_TOOLS, calls
from wire.actions import validate_action
from wire.dialects import anthropic, openai
from wire.errors import ActionError
from wire.scaling import Scale, to_screen_action

SCREEN = Scale.identity(1024, 768)


def _actions(steps: list[Any]) -> list[dict[str, Any]]:
    return [s.action for s in steps]


@pytest.mark.parametrize("tool", ANTHROPIC_TOOLS + OPENAI_TOOLS)
def test_every_recorded_body_becomes_valid_canonical_actions(tool: str) -> None:
    translate = ((lambda b: anthropic.translate(b)) if tool in ANTHROPIC_TOOLS
                 else (lambda b: openai.translate(b, SCREEN)))
    for name, body in calls(tool).items():
        steps = translate(body)
        assert steps, name
        for step in steps:
            validate_action(to_screen_action(step.action, SCREEN), 1024, 768)


def test_anthropic_legacy_forms() -> None:
    c = calls("computer_20241022")
    assert _actions(anthropic.translate(c["left_click_drag"])) == [
        {"action": "left_click_drag", "coordinate": [420, 260]}]
    c = calls("computer_20250124")
    assert _actions(anthropic.translate(c["left_click_with_key"])) == [
        {"action": "left_click", "coordinate": [310, 210], "text": "shift"}]
    assert _actions(anthropic.translate(c["scroll_zero"]))[0]["scroll_amount"] == 0


def test_toolset_member_calls_take_the_name_as_the_action() -> None:
    c = calls("computer_toolset_20260801")
    assert _actions(anthropic.translate(c["key_repeat"])) == [
        {"action": "key", "text": "BackSpace", "repeat": 2}]
    assert _actions(anthropic.translate(c["left_click_drag_modifiers"])) == [
        {"action": "left_click_drag", "start_coordinate": [120, 140], "coordinate": [200, 180],
         "text": "ctrl"}]
    # the bare {name, input} pair works as well as the whole tool_use block
    assert _actions(anthropic.translate({"name": "screenshot", "input": {}})) == [
        {"action": "screenshot"}]


@pytest.mark.parametrize("body,field", [
    ({"action": "left_click", "key": "shift", "text": "ctrl"}, "key"),
    ({"action": "type", "text": "x", "key": "shift"}, "key"),
    ({"name": "left_click", "input": {"action": "left_click"}}, "action"),
    ({"type": "tool_use", "name": "navigate", "toolset_name": "browser", "input": {}}, "toolset_name"),
    ({"type": "text", "name": "left_click", "input": {}}, "type"),
    ({"name": "left_click", "input": [1, 2]}, "input"),
    ({"name": "left_click", "input": {}, "extra": 1}, "extra"),
    ({"coordinate": [1, 2]}, "action"),
])
def test_anthropic_wrong_fields_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ActionError) as e:
        anthropic.translate(body)
    assert e.value.field == field


def test_openai_mapping() -> None:
    c = calls("computer_use_preview")
    assert _actions(openai.translate(c["click_back"], SCREEN)) == [
        {"action": "back_click", "coordinate": [330, 230]}]
    assert _actions(openai.translate(c["click_wheel"], SCREEN)) == [
        {"action": "middle_click", "coordinate": [340, 240]}]
    assert _actions(openai.translate(c["drag"], SCREEN)) == [
        {"action": "left_click_drag", "start_coordinate": [100, 100], "coordinate": [200, 160],
         "path": [[150, 130]]}]
    assert _actions(openai.translate(c["keypress"], SCREEN)) == [{"action": "key", "text": "ENTER"}]
    # 240 px = two wheel clicks of 120 px
    assert _actions(openai.translate(c["scroll"], SCREEN)) == [
        {"action": "scroll", "coordinate": [320, 220], "scroll_direction": "down",
         "scroll_amount": 2}]
    assert _actions(openai.translate(c["wait"], SCREEN)) == [
        {"action": "wait", "duration": openai.WAIT_S}]


def test_openai_batches_keep_order_and_index() -> None:
    steps = openai.translate(calls("computer")["actions_only"], SCREEN)
    assert [(s.index, s.action["action"]) for s in steps] == [
        (0, "scroll"), (0, "scroll"), (1, "left_click_drag"), (2, "double_click"), (3, "screenshot")]
    assert steps[0].action["text"] == "SHIFT" and steps[2].action["text"] == "CTRL"
    assert {s.action["scroll_direction"] for s in steps[:2]} == {"up", "right"}
    batch = openai.translate(calls("computer")["batch"], SCREEN)
    assert batch[1].action == {"action": "type", "text": "echo f_gaXX"}
    assert [s.prefix for s in batch][:2] == ["actions[0].", "actions[1]."]


def test_openai_keys_combine_case_insensitively() -> None:
    steps = openai.translate({"type": "keypress", "keys": ["CTRL", "SHIFT", "T"]}, SCREEN)
    assert steps[0].action == {"action": "key", "text": "CTRL+SHIFT+t"}
    lone = openai.translate({"type": "keypress", "keys": ["A"]}, SCREEN)
    assert lone[0].action == {"action": "key", "text": "A"}


def test_openai_pixel_scrolls_scale_with_the_agent_picture() -> None:
    half = Scale(512, 384, 1024, 768)
    # 120 agent px = 240 screen px = two wheel clicks; long scrolls split at 100 clicks
    steps = openai.translate({"type": "scroll", "x": 1, "y": 1, "scroll_x": 0, "scroll_y": 120},
                             half)
    assert steps[0].action["scroll_amount"] == 2
    steps = openai.translate({"type": "scroll", "x": 1, "y": 1, "scroll_x": 0,
                              "scroll_y": -120 * 150}, SCREEN)
    assert [s.action["scroll_amount"] for s in steps] == [100, 50]
    assert {s.action["scroll_direction"] for s in steps} == {"up"}
    # a small non-zero scroll is one click, never none
    steps = openai.translate({"type": "scroll", "x": 1, "y": 1, "scroll_x": 5, "scroll_y": 0}, SCREEN)
    assert steps[0].action["scroll_amount"] == 1


@pytest.mark.parametrize("body,field", [
    ({"type": "click", "button": "left", "x": 1024, "y": 0}, "x"),
    ({"type": "click", "button": "left", "x": 0, "y": -1}, "y"),
    ({"type": "click", "button": "middle", "x": 0, "y": 0}, "button"),
    ({"type": "click", "x": 0, "y": 0}, "button"),
    ({"type": "click", "button": "left", "x": 0, "y": 0, "coordinate": [0, 0]}, "coordinate"),
    ({"type": "click", "button": "left", "x": 1.5, "y": 0}, "x"),
    ({"type": "move", "x": 0, "y": 0, "keys": "ctrl"}, "keys"),
    ({"type": "drag", "path": [{"x": 0, "y": 0}]}, "path"),
    ({"type": "drag", "path": [{"x": 0, "y": 0}, {"x": 0, "y": 900}]}, "path[1].y"),
    ({"type": "keypress", "keys": []}, "keys"),
    ({"type": "scroll", "x": 0, "y": 0, "scroll_x": 0}, "scroll_y"),
    ({"type": "launch"}, "type"),
    ({"action": "left_click"}, "type"),
    ({"actions": [{"type": "wait"}] * (openai.MAX_BATCH + 1)}, "actions"),
    ({"actions": []}, "actions"),
    ({"actions": [{"type": "wait"}, {"type": "move", "x": 5000, "y": 0}]}, "actions[1].x"),
    ({"type": "computer_call", "call_id": "c"}, "actions"),
    ({"type": "computer_call", "action": {"type": "wait"}, "actions": [{"type": "wait"}]}, "actions"),
    ({"type": "computer_call", "action": {"type": "click", "button": "left", "x": 0}}, "action.y"),
])
def test_openai_wrong_fields_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ActionError) as e:
        openai.translate(body, SCREEN)
    assert e.value.field == field


def test_openai_coordinates_are_checked_in_agent_pixels() -> None:
    small = Scale(640, 360, 1024, 768)
    with pytest.raises(ActionError) as e:
        openai.translate({"type": "move", "x": 640, "y": 0}, small)
    assert e.value.field == "x" and "0..639" in e.value.message
