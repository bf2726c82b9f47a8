"""Anthropic's computer-use tool inputs, as Claude sends them.

Sources (the field sets below follow them):

* ``computer_20241022`` / ``computer_20250124`` / ``computer_20251124``: the
  ``input`` of a ``tool_use`` block, ``{"action": ..., ...}``; reference
  implementation anthropics/anthropic-quickstarts
  ``computer-use-demo/computer_use_demo/tools/computer.py``; the ``zoom`` action
  (``region: [x0, y0, x1, y1]``) is 20251124's.
* ``computer_toolset_20260801``: one tool per action, the action being the
  ``tool_use`` block's ``name`` and the input carrying no ``action``; types in
  anthropics/anthropic-sdk-python ``src/anthropic/types/beta/beta_computer_*_input.py``
  (``key`` takes ``repeat``; clicks, drags and scrolls take ``text`` modifiers).

Canonical actions are Anthropic's own shape, so translation is mostly a check of
the envelope plus the legacy spellings the upstream tools use:

* ``key`` naming held modifiers on a click or scroll (the reference
  implementation's parameter) means the same as ``text``;
* ``left_click_drag`` without ``start_coordinate`` (20241022) drags from the pointer;
* ``scroll_amount: 0`` is allowed (it moves the pointer and scrolls nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from wire.dialects import Step
from wire.errors import ActionError

__all__ = ["MODIFIER_ACTIONS", "TOOL_USE_FIELDS", "translate"]

MODIFIER_ACTIONS: Final = frozenset({
    "left_click", "right_click", "middle_click", "double_click", "triple_click",
    "left_click_drag", "scroll",
})
"""Actions whose ``text`` (or legacy ``key``) names keys held during the action."""

TOOL_USE_FIELDS: Final = frozenset({"type", "id", "name", "input", "toolset_name", "caller",
                                    "cache_control"})
"""Fields of a ``tool_use`` block; a member call may be sent as the whole block."""


def _normalise(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    action: dict[str, Any] = {"action": name}
    for key, value in fields.items():
        if key == "action":
            raise ActionError("action", "a toolset member call names its action in 'name', "
                                        "not in its input")
        action[key] = value
    legacy = action.pop("key", None)
    if legacy is not None:
        if name not in MODIFIER_ACTIONS:
            raise ActionError("key", f"unexpected field for action {name!r}")
        text = action.get("text")
        if text is not None and text != legacy:
            raise ActionError("key", "'key' and 'text' both name held keys and disagree")
        action["text"] = legacy
    return action


def translate(body: Mapping[str, Any]) -> list[Step]:
    """Canonical steps for one Anthropic computer-use call.

    ``body`` is either a computer tool input (``{"action": "left_click", ...}``)
    or a toolset member call (``{"name": "left_click", "input": {...}}``, the
    ``tool_use`` block itself is accepted as it is).
    """
    if not isinstance(body, Mapping):
        raise ActionError("action", "the request body must be a JSON object")
    if "action" in body:
        name = body.get("action")
        if not isinstance(name, str):
            raise ActionError("action", f"must be an action name, got {name!r:.60}")
        return [Step(_normalise(name, {k: v for k, v in body.items() if k != "action"}))]
    if "name" in body or "input" in body:
        for key in body:
            if key not in TOOL_USE_FIELDS:
                raise ActionError(key, "unexpected field in a toolset member call")
        if body.get("type", "tool_use") != "tool_use":
            raise ActionError("type", f"must be 'tool_use', got {body.get('type')!r:.60}")
        toolset = body.get("toolset_name")
        if toolset is not None and toolset != "computer":
            raise ActionError("toolset_name", f"only the 'computer' toolset acts on the desktop, "
                                              f"got {toolset!r:.60}")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ActionError("name", f"must be a member tool name, got {name!r:.60}")
        member_input = body.get("input", {})
        if member_input is None:
            member_input = {}
        if not isinstance(member_input, Mapping):
            raise ActionError("input", "must be a JSON object")
        return [Step(_normalise(name, member_input))]
    raise ActionError("action", "required: an 'action' (computer tool input) or a 'name' and "
                                "'input' (computer toolset member call)")
