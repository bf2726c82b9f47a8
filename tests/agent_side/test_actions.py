"""Computer-use actions: validation of every field and bound, execution on a
fake injector, and end-to-end on a real Xvfb with a real X client watching."""

from __future__ import annotations

import base64
import select
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from Xlib import XK, X
from Xlib.display import Display
from Xlib.protocol import event as xevent

from agent_side.actions import execute_action, run_action
from agent_side.injector import NullInjector, XTestInjector
from wire.actions import (
    ACTION_NAMES,
    Click,
    CursorPosition,
    Drag,
    HoldKey,
    KeyPress,
    MouseButtonAction,
    MouseMoveAction,
    ScreenshotAction,
    ScrollAction,
    TypeText,
    Wait,
    ZoomAction,
    validate_action,
)
from wire.errors import ActionError, WireError
from wire.keys import keysym_to_char, parse_combo

if TYPE_CHECKING:
    from tests.conftest import XDisplay

W, H = 1600, 900


def v(**action: Any) -> object:
    return validate_action(action, W, H)


# ---------------------------------------------------------------- validation: valid


def test_every_action_validates() -> None:
    cases: dict[str, tuple[dict[str, Any], object]] = {
        "screenshot": ({}, ScreenshotAction()),
        "mouse_move": ({"coordinate": [5, 6]}, MouseMoveAction((5, 6))),
        "left_click": ({"coordinate": [0, 0]}, Click("left", 1, (0, 0))),
        "right_click": ({}, Click("right", 1, None)),
        "middle_click": ({"coordinate": None}, Click("middle", 1, None)),
        "double_click": ({"coordinate": [W - 1, H - 1]}, Click("left", 2, (W - 1, H - 1))),
        "triple_click": ({"text": "shift"}, Click("left", 3, None, parse_combo("shift"))),
        "left_click_drag": ({"start_coordinate": [1, 2], "coordinate": [3, 4]},
                            Drag((1, 2), (3, 4))),
        "back_click": ({"coordinate": [1, 1]}, Click("back", 1, (1, 1))),
        "forward_click": ({}, Click("forward", 1, None)),
        "zoom": ({"region": [0, 0, W, H]}, ZoomAction((0, 0, W, H))),
        "left_mouse_down": ({}, MouseButtonAction(True)),
        "left_mouse_up": ({}, MouseButtonAction(False)),
        "scroll": ({"coordinate": [10, 10], "scroll_direction": "down", "scroll_amount": 3},
                   ScrollAction("down", 3, (10, 10))),
        "type": ({"text": "hi ✓\n"}, TypeText("hi ✓\n")),
        "key": ({"text": "ctrl+s"}, KeyPress((parse_combo("ctrl+s"),))),
        "hold_key": ({"text": "shift", "duration": 1}, HoldKey(parse_combo("shift"), 1.0)),
        "cursor_position": ({}, CursorPosition()),
        "wait": ({"duration": 0.5}, Wait(0.5)),
    }
    assert set(cases) == set(ACTION_NAMES)
    for name, (fields, expected) in cases.items():
        assert validate_action({"action": name, **fields}, W, H) == expected, name


def test_scroll_without_coordinate_and_all_directions() -> None:
    for direction in ("up", "down", "left", "right"):
        got = v(action="scroll", scroll_direction=direction, scroll_amount=1)
        assert got == ScrollAction(direction, 1, None)  # type: ignore[arg-type]
    assert v(action="scroll", scroll_direction="up", scroll_amount=100,
             text="ctrl") == ScrollAction("up", 100, None, parse_combo("ctrl"))


def test_computer_use_tool_forms() -> None:
    # the forms of Anthropic's tools and of wire.dialects' translations
    assert v(action="left_click_drag", coordinate=[3, 4]) == Drag(None, (3, 4))
    assert v(action="left_click_drag", start_coordinate=[1, 1], coordinate=[3, 4], text="ctrl",
             path=[[2, 2], [2, 3]]) == Drag((1, 1), (3, 4), parse_combo("ctrl"), ((2, 2), (2, 3)))
    assert v(action="scroll", scroll_direction="up", scroll_amount=0) == ScrollAction("up", 0, None)
    assert v(action="mouse_move", coordinate=[1, 2], text="shift") \
        == MouseMoveAction((1, 2), parse_combo("shift"))
    assert v(action="key", text="BackSpace", repeat=3) == KeyPress((parse_combo("BackSpace"),) * 3)


def test_key_sequence_and_bounds_inclusive() -> None:
    got = v(action="key", text="ctrl+a Delete")
    assert isinstance(got, KeyPress) and len(got.combos) == 2
    assert v(action="wait", duration=0) == Wait(0.0)
    assert v(action="wait", duration=100) == Wait(100.0)
    assert v(action="hold_key", text="a", duration=100.0) == HoldKey(parse_combo("a"), 100.0)


# ---------------------------------------------------------------- validation: errors


@pytest.mark.parametrize(
    ("action", "field"),
    [
        # unknown / malformed action
        ({}, "action"),
        ({"action": "fly"}, "action"),
        ({"action": 3}, "action"),
        ({"action": None}, "action"),
        # extra fields
        ({"action": "screenshot", "coordinate": [1, 1]}, "coordinate"),
        ({"action": "cursor_position", "text": "x"}, "text"),
        ({"action": "left_mouse_down", "coordinate": [1, 1]}, "coordinate"),
        ({"action": "left_mouse_up", "foo": 1}, "foo"),
        ({"action": "type", "text": "a", "coordinate": [1, 1]}, "coordinate"),
        ({"action": "key", "text": "a", "duration": 1}, "duration"),
        ({"action": "wait", "duration": 1, "text": "a"}, "text"),
        ({"action": "mouse_move", "coordinate": [1, 1], "start_coordinate": [1, 1]},
         "start_coordinate"),
        # missing fields
        ({"action": "mouse_move"}, "coordinate"),
        ({"action": "mouse_move", "coordinate": None}, "coordinate"),
        ({"action": "left_click_drag", "start_coordinate": [1, 1]}, "coordinate"),
        ({"action": "scroll", "scroll_amount": 1}, "scroll_direction"),
        ({"action": "scroll", "scroll_direction": "up"}, "scroll_amount"),
        ({"action": "type"}, "text"),
        ({"action": "key"}, "text"),
        ({"action": "hold_key", "duration": 1}, "text"),
        ({"action": "hold_key", "text": "a"}, "duration"),
        ({"action": "wait"}, "duration"),
        # mistyped coordinates
        ({"action": "mouse_move", "coordinate": "1,2"}, "coordinate"),
        ({"action": "mouse_move", "coordinate": [1]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": [1, 2, 3]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": [1.5, 2]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": [True, 2]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": ["1", "2"]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": {"x": 1, "y": 2}}, "coordinate"),
        # coordinates outside the screen
        ({"action": "mouse_move", "coordinate": [-1, 0]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": [0, -1]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": [W, 0]}, "coordinate"),
        ({"action": "mouse_move", "coordinate": [0, H]}, "coordinate"),
        ({"action": "left_click", "coordinate": [W, H]}, "coordinate"),
        ({"action": "double_click", "coordinate": [99999, 5]}, "coordinate"),
        ({"action": "triple_click", "coordinate": [5, -5]}, "coordinate"),
        ({"action": "left_click_drag", "start_coordinate": [W, 1], "coordinate": [1, 1]},
         "start_coordinate"),
        ({"action": "left_click_drag", "start_coordinate": [1, 1], "coordinate": [1, H]},
         "coordinate"),
        ({"action": "scroll", "coordinate": [-1, 1], "scroll_direction": "up",
          "scroll_amount": 1}, "coordinate"),
        # scroll fields
        ({"action": "scroll", "scroll_direction": "sideways", "scroll_amount": 1},
         "scroll_direction"),
        ({"action": "scroll", "scroll_direction": 1, "scroll_amount": 1}, "scroll_direction"),
        ({"action": "key", "text": "a", "repeat": 0}, "repeat"),
        ({"action": "key", "text": "a", "repeat": 101}, "repeat"),
        ({"action": "zoom", "region": [0, 0, 0, 5]}, "region"),
        ({"action": "zoom", "region": [0, 0, W + 1, 5]}, "region"),
        ({"action": "zoom", "region": [0, 0, 5]}, "region"),
        ({"action": "left_click_drag", "coordinate": [1, 1], "path": [[1, H]]}, "path[0]"),
        ({"action": "left_click_drag", "coordinate": [1, 1], "path": [[1, 1]] * 101}, "path"),
        ({"action": "scroll", "scroll_direction": "up", "scroll_amount": 101}, "scroll_amount"),
        ({"action": "scroll", "scroll_direction": "up", "scroll_amount": -3}, "scroll_amount"),
        ({"action": "scroll", "scroll_direction": "up", "scroll_amount": 2.0}, "scroll_amount"),
        ({"action": "scroll", "scroll_direction": "up", "scroll_amount": "2"}, "scroll_amount"),
        ({"action": "scroll", "scroll_direction": "up", "scroll_amount": True}, "scroll_amount"),
        ({"action": "scroll", "scroll_direction": "up", "scroll_amount": 1, "text": "bogus"},
         "text"),
        # durations
        ({"action": "wait", "duration": -0.1}, "duration"),
        ({"action": "wait", "duration": 100.01}, "duration"),
        ({"action": "wait", "duration": "1"}, "duration"),
        ({"action": "wait", "duration": True}, "duration"),
        ({"action": "wait", "duration": float("nan")}, "duration"),
        ({"action": "wait", "duration": float("inf")}, "duration"),
        ({"action": "hold_key", "text": "a", "duration": -1}, "duration"),
        ({"action": "hold_key", "text": "a", "duration": 101}, "duration"),
        ({"action": "hold_key", "text": "a", "duration": [1]}, "duration"),
        # text fields
        ({"action": "type", "text": ""}, "text"),
        ({"action": "type", "text": 5}, "text"),
        ({"action": "type", "text": ["a"]}, "text"),
        ({"action": "type", "text": "a\x00b"}, "text"),
        ({"action": "type", "text": "x" * (64 * 1024 + 1)}, "text"),
        ({"action": "key", "text": ""}, "text"),
        ({"action": "key", "text": "ctrl+nosuchkey"}, "text"),
        ({"action": "key", "text": "ctrl+"}, "text"),
        ({"action": "key", "text": 7}, "text"),
        ({"action": "hold_key", "text": "ctrl+a b", "duration": 1}, "text"),
        ({"action": "hold_key", "text": "nokey", "duration": 1}, "text"),
        ({"action": "left_click", "text": "nokey"}, "text"),
        ({"action": "left_click", "text": 3}, "text"),
    ],
)
def test_invalid_actions(action: dict[str, Any], field: str) -> None:
    with pytest.raises(ActionError) as info:
        validate_action(action, W, H)
    assert info.value.field == field
    assert info.value.message
    assert isinstance(info.value, WireError)


def test_body_must_be_object() -> None:
    with pytest.raises(ActionError) as info:
        validate_action(["screenshot"], W, H)  # type: ignore[arg-type]
    assert info.value.field == "action"


def test_coordinate_bound_follows_screen_size() -> None:
    assert validate_action({"action": "mouse_move", "coordinate": [639, 479]}, 640, 480)
    with pytest.raises(ActionError):
        validate_action({"action": "mouse_move", "coordinate": [640, 479]}, 640, 480)


# ---------------------------------------------------------------- execution on the fake


def test_execution_calls_on_null_injector() -> None:
    inj = NullInjector(W, H)
    assert run_action(inj, {"action": "mouse_move", "coordinate": [10, 20]}) == {
        "ok": True, "cursor": [10, 20]}
    run_action(inj, {"action": "double_click", "coordinate": [30, 40], "text": "shift"})
    run_action(inj, {"action": "scroll", "scroll_direction": "left", "scroll_amount": 4})
    run_action(inj, {"action": "key", "text": "ctrl+a Delete"})
    run_action(inj, {"action": "type", "text": "hé"})
    run_action(inj, {"action": "hold_key", "text": "shift", "duration": 0})
    run_action(inj, {"action": "left_mouse_down"})
    assert inj.pressed_buttons == {"left"}
    run_action(inj, {"action": "left_mouse_up"})
    names = [c for c in inj.calls if c[0] != "cursor_position"]
    assert names == [
        ("mouse_move", (10, 20)),
        ("mouse_move", (30, 40)),
        ("key_down", (XK.XK_Shift_L,)),
        ("button_down", ("left",)), ("button_up", ("left",)),
        ("button_down", ("left",)), ("button_up", ("left",)),
        ("key_up", (XK.XK_Shift_L,)),
        ("scroll", (30, 40, -4, 0)),
        ("key_combo", ("ctrl+a",)),
        ("key_combo", ("Delete",)),
        ("type_text", ("hé",)),
        ("hold_key", ("shift", 0.0)),
        ("button_down", ("left",)),
        ("button_up", ("left",)),
    ]
    assert inj.pressed_keysyms == frozenset()


def test_screenshot_and_wait() -> None:
    inj = NullInjector(W, H)
    result = run_action(inj, {"action": "screenshot"}, screenshot=lambda: b"\x89PNG fake")
    assert base64.b64decode(result["base64_image"]) == b"\x89PNG fake"
    assert result["ok"] is True and result["cursor"] == [0, 0]
    with pytest.raises(ActionError):
        run_action(inj, {"action": "screenshot"})
    slept: list[float] = []
    execute_action(inj, Wait(2.5), sleep=slept.append)
    assert slept == [2.5]
    with pytest.raises(ActionError):
        run_action(inj, {"action": "mouse_move", "coordinate": [W, 0]})


def test_drag_releases_button_even_if_move_fails() -> None:
    class Failing(NullInjector):
        def mouse_move(self, x: int, y: int) -> None:
            if (x, y) != (1, 1):
                raise RuntimeError("boom")
            super().mouse_move(x, y)

    inj = Failing(W, H)
    with pytest.raises(RuntimeError):
        execute_action(inj, Drag((1, 1), (9, 9)), sleep=lambda _: None)
    assert inj.pressed_buttons == frozenset()


# ---------------------------------------------------------------- real X


class Watcher:
    """A real X client: full-screen window recording button and key presses."""

    def __init__(self, display: str) -> None:
        self.d = Display(display)
        screen = self.d.screen()
        self.win = screen.root.create_window(
            0, 0, screen.width_in_pixels, screen.height_in_pixels, 0, X.CopyFromParent,
            X.InputOutput, X.CopyFromParent, override_redirect=True,
            event_mask=(X.ButtonPressMask | X.ButtonReleaseMask | X.KeyPressMask
                        | X.StructureNotifyMask | X.PointerMotionMask))
        self.win.map()
        self.events: list[Any] = []
        self.poll_until(lambda: any(e.type == X.MapNotify for e in self.events), "map")
        self.win.set_input_focus(X.RevertToParent, X.CurrentTime)
        self.d.sync()
        self.events.clear()

    def poll_until(self, cond: Any, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            while self.d.pending_events():
                ev = self.d.next_event()
                if isinstance(ev, xevent.MappingNotify):
                    self.d.refresh_keyboard_mapping(ev)
                self.events.append(ev)
            if cond():
                return
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {what}"
            select.select([self.d.fileno()], [], [], min(remaining, 0.1))

    def of(self, kind: int) -> list[Any]:
        return [e for e in self.events if e.type == kind]

    def text(self) -> str:
        out = []
        for e in self.of(X.KeyPress):
            index = 1 if e.state & X.ShiftMask and self.d.keycode_to_keysym(e.detail, 1) else 0
            char = keysym_to_char(self.d.keycode_to_keysym(e.detail, index))
            if char is not None and not e.state & X.ControlMask:
                out.append(char)
        return "".join(out)


@pytest.fixture
def real(xvfb: XDisplay) -> Iterator[tuple[XTestInjector, Watcher]]:
    inj = XTestInjector(xvfb.name, xvfb.width, xvfb.height)
    watcher = Watcher(xvfb.name)
    try:
        yield inj, watcher
    finally:
        inj.close()
        watcher.d.close()


def test_real_clicks(real: tuple[XTestInjector, Watcher]) -> None:
    inj, w = real
    assert run_action(inj, {"action": "left_click", "coordinate": [100, 200]}) == {
        "ok": True, "cursor": [100, 200]}
    run_action(inj, {"action": "right_click", "coordinate": [300, 400]})
    run_action(inj, {"action": "triple_click", "coordinate": [5, 6]})
    run_action(inj, {"action": "middle_click"})
    w.poll_until(lambda: len(w.of(X.ButtonRelease)) == 6, "clicks")
    assert [(e.detail, e.root_x, e.root_y) for e in w.of(X.ButtonPress)] == [
        (1, 100, 200), (3, 300, 400), (1, 5, 6), (1, 5, 6), (1, 5, 6), (2, 5, 6)]


def test_real_drag_scroll_and_mouse_down(real: tuple[XTestInjector, Watcher]) -> None:
    inj, w = real
    run_action(inj, {"action": "left_click_drag", "start_coordinate": [10, 10],
                     "coordinate": [110, 60]})
    w.poll_until(lambda: len(w.of(X.ButtonRelease)) == 1, "drag")
    press, release = w.of(X.ButtonPress)[0], w.of(X.ButtonRelease)[0]
    assert (press.root_x, press.root_y, release.root_x, release.root_y) == (10, 10, 110, 60)
    motions = [e for e in w.of(X.MotionNotify) if e.state & X.Button1Mask]
    assert len(motions) >= 2
    w.events.clear()
    run_action(inj, {"action": "scroll", "coordinate": [50, 50], "scroll_direction": "up",
                     "scroll_amount": 2})
    run_action(inj, {"action": "scroll", "scroll_direction": "right", "scroll_amount": 1})
    w.poll_until(lambda: len(w.of(X.ButtonRelease)) == 3, "scroll")
    assert [(e.detail, e.root_x, e.root_y) for e in w.of(X.ButtonPress)] == [
        (4, 50, 50), (4, 50, 50), (7, 50, 50)]
    run_action(inj, {"action": "left_mouse_down"})
    assert inj.cursor_position() == (50, 50)
    assert int(inj._d.screen().root.query_pointer().mask) & X.Button1Mask
    run_action(inj, {"action": "left_mouse_up"})
    assert not int(inj._d.screen().root.query_pointer().mask) & X.Button1Mask


def test_real_side_buttons_and_drags_of_the_computer_use_tools(
        real: tuple[XTestInjector, Watcher]) -> None:
    inj, w = real
    run_action(inj, {"action": "back_click", "coordinate": [30, 40]})
    run_action(inj, {"action": "forward_click"})
    w.poll_until(lambda: len(w.of(X.ButtonRelease)) == 2, "side buttons")
    assert [(e.detail, e.root_x, e.root_y) for e in w.of(X.ButtonPress)] == [(8, 30, 40), (9, 30, 40)]
    w.events.clear()
    # from the pointer, through a waypoint, with ctrl held from press to release
    run_action(inj, {"action": "left_click_drag", "coordinate": [200, 40], "path": [[130, 140]],
                     "text": "ctrl"})
    w.poll_until(lambda: len(w.of(X.ButtonRelease)) == 1, "drag")
    press, release = w.of(X.ButtonPress)[0], w.of(X.ButtonRelease)[0]
    assert (press.root_x, press.root_y, release.root_x, release.root_y) == (30, 40, 200, 40)
    assert press.state & X.ControlMask and release.state & X.ControlMask
    dragged = [(e.root_x, e.root_y) for e in w.of(X.MotionNotify) if e.state & X.Button1Mask]
    assert (130, 140) in dragged and max(y for _, y in dragged) == 140
    w.events.clear()
    run_action(inj, {"action": "mouse_move", "coordinate": [60, 70], "text": "shift"})
    w.poll_until(lambda: any(e.root_x == 60 for e in w.of(X.MotionNotify)), "move")
    assert [e.state & X.ShiftMask for e in w.of(X.MotionNotify) if e.root_x == 60] == [X.ShiftMask]
    assert not int(inj._d.screen().root.query_pointer().mask) & (X.ShiftMask | X.ControlMask)


def test_real_type_and_keys(real: tuple[XTestInjector, Watcher]) -> None:
    inj, w = real
    run_action(inj, {"action": "type", "text": "Hi wörld ✓\n"})
    run_action(inj, {"action": "key", "text": "ctrl+s"})
    run_action(inj, {"action": "key", "text": "shift+a Return"})
    w.poll_until(lambda: w.text() == "Hi wörld ✓\nA\n", "typed text")
    ctrl_s = [e for e in w.of(X.KeyPress) if e.state & X.ControlMask]
    assert [w.d.keycode_to_keysym(e.detail, 0) for e in ctrl_s] == [XK.XK_s]
    assert run_action(inj, {"action": "cursor_position"})["cursor"] == list(
        inj.cursor_position())
    keymap = inj._d.query_keymap()
    assert not any(keymap)
