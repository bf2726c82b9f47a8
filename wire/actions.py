"""Computer-use actions (API.md, "Agent actions"): the typed actions and their validation.

:func:`validate_action` is pure, so the gateway rejects a bad request (422,
``errors: [{field, message}]`` from :class:`~wire.errors.ActionError`) before
forwarding it, and the runtime agent checks it again against its own screen
before executing it (``agent_side.actions.execute_action``).

Field rules: unknown actions and unknown fields are errors; optional fields
may be absent or ``null``; coordinates are ``[x, y]`` integers on the screen;
durations are 0-100 seconds; ``scroll_amount`` is 0-100 (0 only moves the
pointer). Clicks, ``mouse_move``, ``left_click_drag`` and ``scroll`` accept an
optional ``text`` naming keys held during the action (``"shift"``,
``"ctrl+alt"``), as the computer-use schema does. Beyond Anthropic's names:
``back_click``/``forward_click`` (X buttons 8/9), ``key`` with ``repeat``,
``left_click_drag`` with waypoints in ``path`` and without ``start_coordinate``
(from the pointer), and ``zoom`` (served by the gateway). Other vendors' shapes
are translated to these in :mod:`wire.dialects`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from wire.errors import ActionError, UnknownKeyError
from wire.keys import KeyCombo, char_to_keysym, parse_combo, parse_key_sequence

__all__ = [
    "ACTION_NAMES",
    "Action",
    "Click",
    "CursorPosition",
    "Drag",
    "HoldKey",
    "KeyPress",
    "MouseButtonAction",
    "MouseMoveAction",
    "ScreenshotAction",
    "ScrollAction",
    "ZoomAction",
    "TypeText",
    "Wait",
    "MouseButton",
    "Point",
    "validate_action",
]

MAX_DURATION_S: Final = 100.0
MAX_SCROLL_AMOUNT: Final = 100
MAX_TYPE_BYTES: Final = 64 * 1024
MAX_KEY_REPEAT: Final = 100
MAX_DRAG_POINTS: Final = 100

Point: TypeAlias = tuple[int, int]
MouseButton: TypeAlias = Literal["left", "middle", "right", "back", "forward"]
ScrollDirection: TypeAlias = Literal["up", "down", "left", "right"]


@dataclass(frozen=True)
class ScreenshotAction:
    """``screenshot``: return a PNG of the screen."""


@dataclass(frozen=True)
class ZoomAction:
    """``zoom``: a PNG of the half-open ``region`` (x0, y0, x1, y1), enlarged.

    Read-only: the gateway serves it from a screenshot (``gateway.media.imaging``);
    the runtime agent never receives it.
    """

    region: tuple[int, int, int, int]


@dataclass(frozen=True)
class MouseMoveAction:
    """``mouse_move``."""

    coordinate: Point
    modifiers: KeyCombo | None = None
    """Keys held during the motion (``text`` field)."""


@dataclass(frozen=True)
class Click:
    """``left_click``, ``right_click``, ``middle_click``, ``double_click``, ``triple_click``."""

    button: MouseButton
    count: int
    """1, 2 or 3 presses."""
    coordinate: Point | None
    """Where to click; ``None`` clicks at the current pointer position."""
    modifiers: KeyCombo | None = None
    """Keys held during the click (``text`` field)."""


@dataclass(frozen=True)
class Drag:
    """``left_click_drag``: press at ``start``, move (through ``via``), release at ``end``."""

    start: Point | None
    """``None`` (no ``start_coordinate``, the 20241022 form): from the pointer."""
    end: Point
    modifiers: KeyCombo | None = None
    """Keys held from the press to the release (``text`` field)."""
    via: tuple[Point, ...] = ()
    """Points passed through between start and end (``path`` field), in order."""


@dataclass(frozen=True)
class MouseButtonAction:
    """``left_mouse_down`` (``down=True``) or ``left_mouse_up``."""

    down: bool


@dataclass(frozen=True)
class ScrollAction:
    """``scroll``: ``amount`` wheel clicks in ``direction``."""

    direction: ScrollDirection
    amount: int
    coordinate: Point | None
    modifiers: KeyCombo | None = None


@dataclass(frozen=True)
class TypeText:
    """``type``."""

    text: str


@dataclass(frozen=True)
class KeyPress:
    """``key``: one or more whitespace-separated combos, run in order."""

    combos: tuple[KeyCombo, ...]


@dataclass(frozen=True)
class HoldKey:
    """``hold_key``."""

    combo: KeyCombo
    duration: float


@dataclass(frozen=True)
class CursorPosition:
    """``cursor_position``."""


@dataclass(frozen=True)
class Wait:
    """``wait``."""

    duration: float


Action: TypeAlias = (
    ScreenshotAction | MouseMoveAction | Click | Drag | MouseButtonAction | ScrollAction
    | TypeText | KeyPress | HoldKey | CursorPosition | Wait | ZoomAction
)

_CLICKS: Final[dict[str, tuple[MouseButton, int]]] = {
    "left_click": ("left", 1),
    "right_click": ("right", 1),
    "middle_click": ("middle", 1),
    "double_click": ("left", 2),
    "triple_click": ("left", 3),
    "back_click": ("back", 1),
    "forward_click": ("forward", 1),
}

# action -> (required fields, optional fields)
_FIELDS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "screenshot": (frozenset(), frozenset()),
    "zoom": (frozenset({"region"}), frozenset()),
    "mouse_move": (frozenset({"coordinate"}), frozenset({"text"})),
    **{name: (frozenset(), frozenset({"coordinate", "text"})) for name in _CLICKS},
    "left_click_drag": (frozenset({"coordinate"}), frozenset({"start_coordinate", "text", "path"})),
    "left_mouse_down": (frozenset(), frozenset()),
    "left_mouse_up": (frozenset(), frozenset()),
    "scroll": (frozenset({"scroll_direction", "scroll_amount"}),
               frozenset({"coordinate", "text"})),
    "type": (frozenset({"text"}), frozenset()),
    "key": (frozenset({"text"}), frozenset({"repeat"})),
    "hold_key": (frozenset({"text", "duration"}), frozenset()),
    "cursor_position": (frozenset(), frozenset()),
    "wait": (frozenset({"duration"}), frozenset()),
}

ACTION_NAMES: Final[tuple[str, ...]] = tuple(_FIELDS)
"""Every action name accepted by :func:`validate_action`."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coordinate(field: str, value: object, width: int, height: int) -> Point:
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(
        _is_int(v) for v in value
    ):
        raise ActionError(field, f"must be [x, y] integers, got {value!r:.60}")
    x, y = int(value[0]), int(value[1])
    if not (0 <= x < width and 0 <= y < height):
        raise ActionError(
            field, f"[{x}, {y}] is outside the screen (0..{width - 1}, 0..{height - 1})")
    return x, y


def _region(value: object, width: int, height: int) -> tuple[int, int, int, int]:
    if not isinstance(value, list | tuple) or len(value) != 4 or not all(_is_int(v) for v in value):
        raise ActionError("region", f"must be [x0, y0, x1, y1] integers, got {value!r:.60}")
    x0, y0, x1, y1 = (int(v) for v in value)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ActionError("region", f"[{x0}, {y0}, {x1}, {y1}] must satisfy 0 <= x0 < x1 <= {width} "
                                    f"and 0 <= y0 < y1 <= {height}")
    return x0, y0, x1, y1


def _duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ActionError("duration", f"must be a number of seconds, got {value!r:.60}")
    if not math.isfinite(value) or not 0 <= value <= MAX_DURATION_S:
        raise ActionError("duration", f"must be between 0 and {MAX_DURATION_S:g}, got {value!r}")
    return float(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ActionError("text", f"must be a string, got {value!r:.60}")
    if not value:
        raise ActionError("text", "must not be empty")
    return value


def _combo(value: object) -> KeyCombo:
    text = _text(value)
    try:
        return parse_combo(text)
    except UnknownKeyError as e:
        raise ActionError("text", str(e)) from e


def validate_action(action: Mapping[str, Any], width: int, height: int) -> Action:
    """Check a computer-use action against a ``width`` x ``height`` screen.

    Returns the typed action; raises :class:`ActionError` naming the first bad field.
    """
    if not isinstance(action, Mapping):
        raise ActionError("action", "the request body must be a JSON object")
    name = action.get("action")
    if not isinstance(name, str) or name not in _FIELDS:
        raise ActionError("action", f"unknown action {name!r:.60}; expected one of "
                          + ", ".join(ACTION_NAMES))
    required, optional = _FIELDS[name]
    for field in sorted(action):
        if field != "action" and field not in required and field not in optional:
            raise ActionError(field, f"unexpected field for action {name!r}")
    for field in sorted(required):
        if action.get(field) is None:
            raise ActionError(field, f"required for action {name!r}")
    # Optional fields may be sent as null by schema-driven clients.
    fields = {k: v for k, v in action.items() if v is not None}

    def point(field: str) -> Point | None:
        value = fields.get(field)
        return None if value is None else _coordinate(field, value, width, height)

    def modifiers() -> KeyCombo | None:
        return _combo(fields["text"]) if "text" in fields else None

    if name in _CLICKS:
        button, count = _CLICKS[name]
        return Click(button, count, point("coordinate"), modifiers())
    match name:
        case "screenshot":
            return ScreenshotAction()
        case "cursor_position":
            return CursorPosition()
        case "zoom":
            return ZoomAction(_region(fields["region"], width, height))
        case "mouse_move":
            return MouseMoveAction(_coordinate("coordinate", fields["coordinate"], width, height),
                                   modifiers())
        case "left_click_drag":
            end = _coordinate("coordinate", fields["coordinate"], width, height)
            path = fields.get("path", [])
            if not isinstance(path, list | tuple) or len(path) > MAX_DRAG_POINTS:
                raise ActionError("path", f"must be a list of at most {MAX_DRAG_POINTS} [x, y] "
                                          f"points, got {path!r:.60}")
            via = tuple(_coordinate(f"path[{i}]", p, width, height) for i, p in enumerate(path))
            return Drag(point("start_coordinate"), end, modifiers(), via)
        case "left_mouse_down" | "left_mouse_up":
            return MouseButtonAction(down=name == "left_mouse_down")
        case "scroll":
            direction = fields["scroll_direction"]
            if direction not in ("up", "down", "left", "right"):
                raise ActionError("scroll_direction",
                                  f"must be up, down, left or right, got {direction!r:.60}")
            amount = fields["scroll_amount"]
            # 0 is the computer-use tools' "move there, scroll nothing"
            if not _is_int(amount) or not 0 <= amount <= MAX_SCROLL_AMOUNT:
                raise ActionError("scroll_amount",
                                  f"must be an integer 0..{MAX_SCROLL_AMOUNT}, got {amount!r:.60}")
            return ScrollAction(direction, int(amount), point("coordinate"), modifiers())
        case "type":
            text = _text(fields["text"])
            if len(text.encode("utf-8", errors="surrogatepass")) > MAX_TYPE_BYTES:
                raise ActionError("text", f"longer than {MAX_TYPE_BYTES} bytes")
            for char in text:
                try:
                    char_to_keysym(char)
                except UnknownKeyError as e:
                    raise ActionError("text", f"cannot type character {char!r}") from e
            return TypeText(text)
        case "key":
            repeat = fields.get("repeat", 1)
            if not _is_int(repeat) or not 1 <= repeat <= MAX_KEY_REPEAT:
                raise ActionError("repeat", f"must be an integer 1..{MAX_KEY_REPEAT}, "
                                            f"got {repeat!r:.60}")
            try:
                return KeyPress(parse_key_sequence(_text(fields["text"])) * int(repeat))
            except UnknownKeyError as e:
                raise ActionError("text", str(e)) from e
        case "hold_key":
            return HoldKey(_combo(fields["text"]), _duration(fields["duration"]))
        case "wait":
            return Wait(_duration(fields["duration"]))
    raise AssertionError(f"unhandled action {name}")  # pragma: no cover
