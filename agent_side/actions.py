"""Execution of validated computer-use actions on an InputInjector.

The actions and their validation are the shared wire format (:mod:`wire.actions`);
this module only carries them out: :func:`execute_action` for a validated action,
:func:`run_action` to validate against the injector's screen and execute.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from wire.actions import (
    Action,
    Click,
    CursorPosition,
    Drag,
    HoldKey,
    KeyPress,
    MouseButtonAction,
    MouseMoveAction,
    Point,
    ScreenshotAction,
    ScrollAction,
    TypeText,
    Wait,
    ZoomAction,
    validate_action,
)
from wire.errors import ActionError
from wire.keys import KeyCombo

from .injector import InputInjector

__all__ = ["DRAG_STEPS", "DRAG_STEP_S", "drag_motions", "execute_action", "run_action"]

DRAG_STEPS: Final = 10
"""Intermediate pointer motions of a drag: toolkits start a drag only after motion."""
DRAG_STEP_S: Final = 0.01


def _with_modifiers(injector: InputInjector, combo: KeyCombo | None,
                    body: Callable[[], None]) -> None:
    if combo is None:
        body()
        return
    held: list[int] = []
    try:
        for keysym in combo.keysyms:
            injector.key_down(keysym)
            held.append(keysym)
        body()
    finally:
        for keysym in reversed(held):
            injector.key_up(keysym)


def execute_action(
    injector: InputInjector,
    action: Action,
    screenshot: Callable[[], bytes] | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Perform a validated action; returns ``{"ok": True, "cursor": [x, y]}``.

    ``screenshot`` returns PNG bytes; it is required for ``screenshot`` actions.
    Blocking (``wait``, ``hold_key``): call from a worker thread.
    """
    result: dict[str, Any] = {"ok": True}
    match action:
        case ScreenshotAction():
            if screenshot is None:
                raise ActionError("action", "screenshots are not available in this session")
            result["base64_image"] = base64.b64encode(screenshot()).decode("ascii")
        case MouseMoveAction(coordinate=(x, y), modifiers=mods):
            _with_modifiers(injector, mods, lambda: injector.mouse_move(x, y))
        case Click(button=button, count=count, coordinate=coordinate, modifiers=mods):
            if coordinate is not None:
                injector.mouse_move(*coordinate)
            _with_modifiers(injector, mods, lambda: injector.click(button, count))
        case Drag(start=start, end=end, modifiers=mods, via=via):
            origin = start if start is not None else injector.cursor_position()
            _with_modifiers(injector, mods, lambda: _drag(injector, (origin, *via, end), sleep))
        case MouseButtonAction(down=down):
            if down:
                injector.button_down("left")
            else:
                injector.button_up("left")
        case ScrollAction(direction=direction, amount=amount, coordinate=coordinate,
                          modifiers=mods):
            x, y = coordinate if coordinate is not None else injector.cursor_position()
            dx = {"left": -amount, "right": amount}.get(direction, 0)
            dy = {"up": -amount, "down": amount}.get(direction, 0)
            _with_modifiers(injector, mods, lambda: injector.scroll(x, y, dx, dy))
        case TypeText(text=text):
            injector.type_text(text)
        case KeyPress(combos=combos):
            for combo in combos:
                injector.key_combo(combo)
        case HoldKey(combo=combo, duration=duration):
            injector.hold_key(combo, duration)
        case Wait(duration=duration):
            sleep(duration)
        case CursorPosition():
            pass
        case ZoomAction():
            raise ActionError("action", "zoom is served by the gateway, not the runtime agent")
    result["cursor"] = list(injector.cursor_position())
    return result


def drag_motions(points: tuple[Point, ...]) -> list[Point]:
    """Pointer positions after the press: :data:`DRAG_STEPS` per leg of the path."""
    motions: list[Point] = []
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        motions.extend((x0 + (x1 - x0) * step // DRAG_STEPS, y0 + (y1 - y0) * step // DRAG_STEPS)
                       for step in range(1, DRAG_STEPS + 1))
    return motions


def _drag(injector: InputInjector, points: tuple[Point, ...],
          sleep: Callable[[float], None]) -> None:
    injector.mouse_move(*points[0])
    injector.button_down("left")
    try:
        for x, y in drag_motions(points):
            sleep(DRAG_STEP_S)
            injector.mouse_move(x, y)
    finally:
        injector.button_up("left")


def run_action(
    injector: InputInjector,
    action: Mapping[str, Any],
    screenshot: Callable[[], bytes] | None = None,
) -> dict[str, Any]:
    """Validate ``action`` against the injector's screen and execute it."""
    return execute_action(injector, validate_action(action, injector.width, injector.height),
                          screenshot)
