"""OpenAI's computer-use actions, as the Responses API sends them.

Sources: openai/openai-python ``src/openai/types/responses/response_computer_tool_call.py``
(``computer_use_preview``: one ``action`` per ``computer_call``) and
``src/openai/types/responses/computer_action.py`` (the GA ``computer`` tool: a
``computer_call`` may carry a batch in ``actions``, and pointer actions may name
``keys`` held during them).

Accepted bodies: one action object (``{"type": "click", ...}``), a batch
``{"actions": [...]}``, or the ``computer_call`` output item as it is
(``{"type": "computer_call", "action": {...}}`` or ``..., "actions": [...]``).

Mapping (agent pixels throughout; :mod:`wire.scaling` maps them to the screen):

=================================  ==============================================
OpenAI                             canonical
=================================  ==============================================
click left/right/wheel             left_click / right_click / middle_click
click back/forward                 back_click / forward_click (X buttons 8 / 9)
double_click                       double_click
drag {path}                        left_click_drag via every point of ``path``
keypress {keys}                    key (the keys as one combo)
move                               mouse_move
scroll {scroll_x, scroll_y}        scroll, whole wheel clicks of
                                   :data:`PIXELS_PER_CLICK` screen pixels
type                               type
wait                               wait :data:`WAIT_S` seconds
screenshot                         screenshot
=================================  ==============================================

``keys`` on a pointer action become the canonical ``text`` modifiers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from wire.dialects import Step
from wire.errors import ActionError
from wire.scaling import Scale

__all__ = ["ACTION_TYPES", "MAX_BATCH", "MAX_PATH", "PIXELS_PER_CLICK", "WAIT_S", "translate"]

MAX_BATCH: Final = 50
"""Most actions in one batch; a longer ``actions`` list is refused whole."""
MAX_PATH: Final = 100
"""Most points in one ``drag`` path."""
PIXELS_PER_CLICK: Final = 120
"""Screen pixels one wheel click scrolls in the session's Chromium (measured there, wheel
deltas of 120 per X button 4/5 click: tests/dialects/test_chromium.py)."""
MAX_CLICKS_PER_STEP: Final = 100
"""A canonical scroll carries at most this many clicks; longer scrolls become several."""
WAIT_S: Final = 1.0
"""How long ``wait`` (which has no duration) waits."""

_BUTTONS: Final = {"left": "left_click", "right": "right_click", "wheel": "middle_click",
                   "back": "back_click", "forward": "forward_click"}

# type -> (required fields, optional fields); "type" itself is implied
ACTION_TYPES: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "click": (frozenset({"button", "x", "y"}), frozenset({"keys"})),
    "double_click": (frozenset({"x", "y"}), frozenset({"keys"})),
    "drag": (frozenset({"path"}), frozenset({"keys"})),
    "keypress": (frozenset({"keys"}), frozenset()),
    "move": (frozenset({"x", "y"}), frozenset({"keys"})),
    "scroll": (frozenset({"x", "y", "scroll_x", "scroll_y"}), frozenset({"keys"})),
    "type": (frozenset({"text"}), frozenset()),
    "wait": (frozenset(), frozenset()),
    "screenshot": (frozenset(), frozenset()),
}
_CALL_FIELDS: Final = frozenset({"type", "id", "call_id", "action", "actions",
                                 "pending_safety_checks", "status"})


def _int(prefix: str, field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ActionError(prefix + field, f"must be an integer, got {value!r:.60}")
    return value


def _point(prefix: str, obj: Mapping[str, Any], scale: Scale) -> list[int]:
    x = _int(prefix, "x", obj.get("x"))
    y = _int(prefix, "y", obj.get("y"))
    if not 0 <= x < scale.agent_width:
        raise ActionError(prefix + "x", f"{x} is outside the screen (0..{scale.agent_width - 1})")
    if not 0 <= y < scale.agent_height:
        raise ActionError(prefix + "y", f"{y} is outside the screen (0..{scale.agent_height - 1})")
    return [x, y]


def _key_name(name: str, alone: bool) -> str:
    # Models write letters in capitals ("CTRL", "A"); with a modifier they mean the
    # key, not shift+key, so a lone capital letter is kept and a combined one lowered.
    if len(name) == 1 and name.isascii() and name.isalpha() and not alone:
        return name.lower()
    return name


def _combo(prefix: str, field: str, keys: object) -> str:
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise ActionError(prefix + field, f"must be a list of key names, got {keys!r:.60}")
    if not keys:
        raise ActionError(prefix + field, "must name at least one key")
    if any(any(c.isspace() for c in k) and k != " " for k in keys):
        raise ActionError(prefix + field, "key names have no spaces")
    names = ["space" if k == " " else _key_name(k, alone=len(keys) == 1) for k in keys]
    return "+".join(names)


def _held(prefix: str, action: Mapping[str, Any]) -> dict[str, Any]:
    keys = action.get("keys")
    if keys is None or keys == []:
        return {}
    return {"text": _combo(prefix, "keys", keys)}


def _scroll_steps(prefix: str, action: Mapping[str, Any], scale: Scale,
                  coordinate: list[int], held: dict[str, Any]) -> list[dict[str, Any]]:
    sx = _int(prefix, "scroll_x", action.get("scroll_x"))
    sy = _int(prefix, "scroll_y", action.get("scroll_y"))
    screen_dx, screen_dy = scale.pixels_to_screen(sx, sy)
    steps: list[dict[str, Any]] = []
    for pixels, positive, negative in ((screen_dy, "down", "up"), (screen_dx, "right", "left")):
        if pixels == 0:
            continue
        # whole clicks, nearest, but never zero for a non-zero request
        clicks = max(1, (abs(pixels) + PIXELS_PER_CLICK // 2) // PIXELS_PER_CLICK)
        while clicks:
            amount = min(clicks, MAX_CLICKS_PER_STEP)
            steps.append({"action": "scroll", "coordinate": coordinate,
                          "scroll_direction": positive if pixels > 0 else negative,
                          "scroll_amount": amount, **held})
            clicks -= amount
    if not steps:
        steps.append({"action": "scroll", "coordinate": coordinate, "scroll_direction": "down",
                      "scroll_amount": 0, **held})
    return steps


def _translate_one(action: object, scale: Scale, index: int, prefix: str) -> list[Step]:
    if not isinstance(action, Mapping):
        raise ActionError(prefix.rstrip(".") or "action", "must be a JSON object")
    kind = action.get("type")
    if not isinstance(kind, str) or kind not in ACTION_TYPES:
        raise ActionError(prefix + "type", f"unknown action type {kind!r:.60}; expected one of "
                                           + ", ".join(ACTION_TYPES))
    required, optional = ACTION_TYPES[kind]
    for field in sorted(action):
        if field != "type" and field not in required and field not in optional:
            raise ActionError(prefix + field, f"unexpected field for a {kind!r} action")
    for field in sorted(required):
        if action.get(field) is None:
            raise ActionError(prefix + field, f"required for a {kind!r} action")
    held = _held(prefix, action)
    note = {"type": kind}
    canonical: list[dict[str, Any]]
    match kind:
        case "click":
            button = action["button"]
            if button not in _BUTTONS:
                raise ActionError(prefix + "button", f"must be one of {', '.join(_BUTTONS)}, "
                                                     f"got {button!r:.60}")
            canonical = [{"action": _BUTTONS[button], "coordinate": _point(prefix, action, scale),
                          **held}]
        case "double_click":
            canonical = [{"action": "double_click", "coordinate": _point(prefix, action, scale),
                          **held}]
        case "move":
            canonical = [{"action": "mouse_move", "coordinate": _point(prefix, action, scale),
                          **held}]
        case "drag":
            path = action["path"]
            if not isinstance(path, list) or len(path) < 2:
                raise ActionError(prefix + "path", "must be a list of at least two {x, y} points")
            if len(path) > MAX_PATH:
                raise ActionError(prefix + "path", f"at most {MAX_PATH} points, got {len(path)}")
            points = []
            for i, point in enumerate(path):
                where = f"{prefix}path[{i}]."
                if not isinstance(point, Mapping):
                    raise ActionError(where.rstrip("."), "must be an {x, y} object")
                extra = set(point) - {"x", "y"}
                if extra:
                    raise ActionError(where + sorted(extra)[0], "unexpected field in a path point")
                points.append(_point(where, point, scale))
            drag: dict[str, Any] = {"action": "left_click_drag", "start_coordinate": points[0],
                                    "coordinate": points[-1], **held}
            if len(points) > 2:
                drag["path"] = points[1:-1]
            canonical = [drag]
        case "keypress":
            canonical = [{"action": "key", "text": _combo(prefix, "keys", action["keys"])}]
        case "scroll":
            canonical = _scroll_steps(prefix, action, scale, _point(prefix, action, scale), held)
            note.update(scroll_x=action["scroll_x"], scroll_y=action["scroll_y"])
        case "type":
            text = action["text"]
            if not isinstance(text, str):
                raise ActionError(prefix + "text", f"must be a string, got {text!r:.60}")
            canonical = [{"action": "type", "text": text}]
        case "wait":
            canonical = [{"action": "wait", "duration": WAIT_S}]
        case _:  # "screenshot"
            canonical = [{"action": "screenshot"}]
    return [Step(a, index=index, prefix=prefix, note=note) for a in canonical]


def translate(body: Mapping[str, Any], scale: Scale) -> list[Step]:
    """Canonical steps for one OpenAI computer call (one action or a batch)."""
    if not isinstance(body, Mapping):
        raise ActionError("action", "the request body must be a JSON object")
    actions: Sequence[object]
    batch = False
    if body.get("type") == "computer_call":
        for field in body:
            if field not in _CALL_FIELDS:
                raise ActionError(field, "unexpected field in a computer_call item")
        if (body.get("action") is None) == (body.get("actions") is None):
            raise ActionError("actions", "a computer_call carries exactly one of 'action' and "
                                         "'actions'")
        if body.get("action") is not None:
            return _translate_one(body["action"], scale, 0, "action.")
        body = {"actions": body["actions"]}
    if "actions" in body:
        extra = set(body) - {"actions"}
        if extra:
            raise ActionError(sorted(extra)[0], "unexpected field next to 'actions'")
        listed = body["actions"]
        if not isinstance(listed, list):
            raise ActionError("actions", "must be a list of action objects")
        if not listed:
            raise ActionError("actions", "must hold at least one action")
        if len(listed) > MAX_BATCH:
            raise ActionError("actions", f"at most {MAX_BATCH} actions per batch, got {len(listed)}")
        actions, batch = listed, True
    else:
        actions = [body]
    steps: list[Step] = []
    for i, action in enumerate(actions):
        steps.extend(_translate_one(action, scale, i, f"actions[{i}]." if batch else ""))
    return steps
