"""OpenAPI schemas of the computer-use dialects: one schema per action, a discriminated ``oneOf`` per dialect.

The field sets mirror :mod:`wire.actions` (canonical and Anthropic), and
:mod:`wire.dialects.openai`; tests/openapi checks that every action name the
validators accept has its schema here, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any, Final

from wire.actions import ACTION_NAMES, MAX_DRAG_POINTS, MAX_KEY_REPEAT, MAX_SCROLL_AMOUNT
from wire.dialects.openai import ACTION_TYPES, MAX_BATCH, MAX_PATH

__all__ = ["ACTION_COMPONENTS", "ANTHROPIC_EXAMPLE", "OPENAI_EXAMPLE"]

_POINT: Final = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2,
                 "maxItems": 2, "description": "[x, y] in the agent's picture (agent_resolution)"}
_HELD: Final = {"type": "string", "description": "keys held during the action, e.g. 'shift', "
                                                 "'ctrl+alt'"}
_LEGACY_HELD: Final = {"type": "string", "description": "same as text (the reference "
                                                        "implementation's name for held keys)"}
_DURATION: Final = {"type": "number", "minimum": 0, "maximum": 100}

_ANTHROPIC_FIELDS: Final[dict[str, dict[str, Any]]] = {
    "coordinate": _POINT,
    "start_coordinate": _POINT,
    "text": {"type": "string", "minLength": 1},
    "key": _LEGACY_HELD,
    "scroll_direction": {"enum": ["up", "down", "left", "right"]},
    "scroll_amount": {"type": "integer", "minimum": 0, "maximum": MAX_SCROLL_AMOUNT},
    "duration": _DURATION,
    "region": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4,
               "maxItems": 4, "description": "[x0, y0, x1, y1), in the agent's picture"},
    "repeat": {"type": "integer", "minimum": 1, "maximum": MAX_KEY_REPEAT},
    "path": {"type": "array", "items": _POINT, "maxItems": MAX_DRAG_POINTS,
             "description": "points passed through between start and end"},
}
_CLICK: Final[tuple[frozenset[str], frozenset[str]]] = (frozenset(), frozenset({"coordinate", "text", "key"}))
# action -> (required, optional), as wire.actions accepts them through the Anthropic dialect
_ANTHROPIC: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "screenshot": (frozenset(), frozenset()),
    "zoom": (frozenset({"region"}), frozenset()),
    "mouse_move": (frozenset({"coordinate"}), frozenset({"text"})),
    "left_click": _CLICK, "right_click": _CLICK, "middle_click": _CLICK,
    "double_click": _CLICK, "triple_click": _CLICK, "back_click": _CLICK, "forward_click": _CLICK,
    "left_click_drag": (frozenset({"coordinate"}),
                        frozenset({"start_coordinate", "text", "key", "path"})),
    "left_mouse_down": (frozenset(), frozenset()),
    "left_mouse_up": (frozenset(), frozenset()),
    "scroll": (frozenset({"scroll_direction", "scroll_amount"}),
               frozenset({"coordinate", "text", "key"})),
    "type": (frozenset({"text"}), frozenset()),
    "key": (frozenset({"text"}), frozenset({"repeat"})),
    "hold_key": (frozenset({"text", "duration"}), frozenset()),
    "cursor_position": (frozenset(), frozenset()),
    "wait": (frozenset({"duration"}), frozenset()),
}
assert set(_ANTHROPIC) == set(ACTION_NAMES), "wire.actions changed: update the OpenAPI schemas"

_OPENAI_FIELDS: Final[dict[str, dict[str, Any]]] = {
    "x": {"type": "integer", "minimum": 0}, "y": {"type": "integer", "minimum": 0},
    "button": {"enum": ["left", "right", "wheel", "back", "forward"]},
    "keys": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
    "path": {"type": "array", "minItems": 2, "maxItems": MAX_PATH, "items": {
        "type": "object", "required": ["x", "y"], "additionalProperties": False,
        "properties": {"x": {"type": "integer", "minimum": 0},
                       "y": {"type": "integer", "minimum": 0}}}},
    "scroll_x": {"type": "integer", "description": "pixels, > 0 scrolls right"},
    "scroll_y": {"type": "integer", "description": "pixels, > 0 scrolls down"},
    "text": {"type": "string"},
}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _variant(discriminator: str, value: str, required: frozenset[str], optional: frozenset[str],
             fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    props: dict[str, Any] = {discriminator: {"type": "string", "enum": [value]}}
    for name in sorted(required | optional):
        props[name] = fields[name]
    return {"type": "object", "additionalProperties": False,
            "required": [discriminator, *sorted(required)], "properties": props}


def _components() -> dict[str, Any]:
    out: dict[str, Any] = {}
    anthropic_refs = {}
    for name, (required, optional) in _ANTHROPIC.items():
        schema_name = f"Action{_camel(name)}"
        out[schema_name] = _variant("action", name, required, optional, _ANTHROPIC_FIELDS)
        anthropic_refs[name] = f"#/components/schemas/{schema_name}"
    out["AnthropicAction"] = {
        "description": "A computer-use tool input (computer_20241022, computer_20250124, "
                       "computer_20251124), one schema per action",
        "oneOf": [{"$ref": ref} for ref in anthropic_refs.values()],
        "discriminator": {"propertyName": "action", "mapping": anthropic_refs}}
    out["ComputerToolsetCall"] = {
        "description": "A computer_toolset_20260801 member call: the tool_use block as it is, "
                       "or just its name and input",
        "type": "object", "required": ["name", "input"], "additionalProperties": False,
        "properties": {
            "name": {"enum": sorted(_ANTHROPIC)},
            "input": {"type": "object", "description": "the member's input (no 'action')"},
            "type": {"type": "string", "enum": ["tool_use"]},
            "id": {"type": "string"},
            "toolset_name": {"type": "string", "enum": ["computer"]},
            "caller": {"type": "object"},
            "cache_control": {"type": "object"}}}
    out["AnthropicCall"] = {"oneOf": [{"$ref": "#/components/schemas/AnthropicAction"},
                                      {"$ref": "#/components/schemas/ComputerToolsetCall"}]}
    openai_refs = {}
    for kind, (required, optional) in ACTION_TYPES.items():
        schema_name = f"OpenAI{_camel(kind)}"
        out[schema_name] = _variant("type", kind, required, optional, _OPENAI_FIELDS)
        openai_refs[kind] = f"#/components/schemas/{schema_name}"
    out["OpenAIAction"] = {
        "description": "An OpenAI computer-use action (computer_use_preview, GA computer)",
        "oneOf": [{"$ref": ref} for ref in openai_refs.values()],
        "discriminator": {"propertyName": "type", "mapping": openai_refs}}
    out["OpenAIBatch"] = {
        "type": "object", "required": ["actions"], "additionalProperties": False,
        "properties": {"actions": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                                   "items": {"$ref": "#/components/schemas/OpenAIAction"}}}}
    out["OpenAIComputerCall"] = {
        "description": "A computer_call output item as the Responses API returns it",
        "type": "object", "required": ["type"], "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": ["computer_call"]},
            "id": {"type": "string"}, "call_id": {"type": "string"},
            "status": {"enum": ["in_progress", "completed", "incomplete"]},
            "pending_safety_checks": {"type": "array", "items": {"type": "object"}},
            "action": {"$ref": "#/components/schemas/OpenAIAction"},
            "actions": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                        "items": {"$ref": "#/components/schemas/OpenAIAction"}}}}
    out["OpenAICall"] = {"oneOf": [{"$ref": "#/components/schemas/OpenAIComputerCall"},
                                   {"$ref": "#/components/schemas/OpenAIBatch"},
                                   {"$ref": "#/components/schemas/OpenAIAction"}]}
    out["ActionResult"] = {"type": "object", "required": ["ok"], "properties": {
        "ok": {"type": "boolean"},
        "cursor": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                   "description": "the pointer afterwards, in the agent's picture"},
        "base64_image": {"type": "string", "description": "PNG (screenshot, zoom)"}}}
    out["OpenAIResult"] = {"type": "object", "required": ["ok", "actions", "output"],
                           "properties": {
        "ok": {"type": "boolean"},
        "actions": {"type": "integer", "description": "how many actions ran"},
        "cursor": {"type": ["array", "null"], "items": {"type": "integer"}},
        "output": {"type": "object", "required": ["type", "image_url"], "properties": {
            "type": {"type": "string", "enum": ["computer_screenshot"]},
            "image_url": {"type": "string", "description": "data:image/png;base64,..."}}}}}
    return out


ACTION_COMPONENTS: Final = _components()
"""Component schemas to merge into ``components.schemas``."""

ANTHROPIC_EXAMPLE: Final = {"action": "left_click", "coordinate": [640, 360], "text": "shift"}
OPENAI_EXAMPLE: Final = {"type": "computer_call", "call_id": "call_1", "actions": [
    {"type": "click", "button": "left", "x": 640, "y": 360},
    {"type": "type", "text": "hello"}, {"type": "keypress", "keys": ["ENTER"]}]}
