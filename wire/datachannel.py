"""Wire format of the ``input`` data channel (API.md, "Live view").

Client -> server messages are JSON text objects with a ``type`` field; they
parse into the frozen dataclasses below via :func:`parse_input_message`, which
raises :class:`~wire.errors.ProtocolError` on anything malformed (the
caller drops the message, counts it and logs at DEBUG). Fields not named here
are ignored so clients may add diagnostics (``ts``, ``code``...) without
breaking older agents. Coordinates are only type-checked here; the injector
clamps them to the screen.

Server -> client messages are built by :func:`error_message` and
:func:`control_message`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from wire.errors import ProtocolError, UnknownKeyError
from wire.keys import dom_key_to_keysym

__all__ = [
    "BUTTONS",
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT_BYTES",
    "Button",
    "Clipboard",
    "DROP_REASONS",
    "InputRejected",
    "InputMessage",
    "KeyDown",
    "KeyUp",
    "MouseDown",
    "MouseMove",
    "MouseUp",
    "Scroll",
    "Text",
    "control_message",
    "error_message",
    "parse_input_message",
]

Button: TypeAlias = Literal["left", "middle", "right"]
BUTTONS: Final[tuple[Button, ...]] = ("left", "middle", "right")

MAX_TEXT_BYTES: Final = 64 * 1024
"""Largest ``text``/``clipboard`` payload, in UTF-8 bytes."""
MAX_MESSAGE_BYTES: Final = 4 * MAX_TEXT_BYTES
"""Larger raw messages are rejected before JSON parsing (JSON escapes inflate text)."""
MAX_KEY_LENGTH: Final = 32
"""Longest DOM key name we accept (the longest real one is ~25 characters)."""
MAX_SCROLL: Final = 1000
"""Scroll deltas beyond this are rejected: no client produces them."""

MAX_COORDINATE: Final = 32767
"""Pointer coordinates beyond this (X's 16-bit range) are rejected; nearer ones are clamped
to the screen by the injector."""

DROP_REASONS: Final = ("too_large", "not_utf8", "not_json", "not_object", "unknown_type",
                       "bad_field", "rate_limited")
"""Why a client message was dropped; the keys of the agent's ``input_dropped`` counters."""


class InputRejected(ProtocolError):
    """A malformed input message; ``reason`` is one of :data:`DROP_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class MouseMove:
    """Move the pointer to absolute remote-screen pixels."""

    x: int
    y: int


@dataclass(frozen=True)
class MouseDown:
    """Press a mouse button at the current pointer position."""

    button: Button


@dataclass(frozen=True)
class MouseUp:
    """Release a mouse button."""

    button: Button


@dataclass(frozen=True)
class Scroll:
    """Scroll at (x, y): ``dy`` > 0 scrolls down, ``dx`` > 0 right, in clicks."""

    x: int
    y: int
    dx: int
    dy: int


@dataclass(frozen=True)
class KeyDown:
    """Press the key with DOM ``KeyboardEvent.key`` value ``key``."""

    key: str


@dataclass(frozen=True)
class KeyUp:
    """Release the key with DOM ``KeyboardEvent.key`` value ``key``."""

    key: str


@dataclass(frozen=True)
class Text:
    """Type a string (paste-like, e.g. from an IME or the viewer's paste box)."""

    text: str


@dataclass(frozen=True)
class Clipboard:
    """Set the remote desktop's clipboard (CLIPBOARD and PRIMARY)."""

    text: str


InputMessage: TypeAlias = (
    MouseMove | MouseDown | MouseUp | Scroll | KeyDown | KeyUp | Text | Clipboard
)


def _number(obj: dict[str, Any], field: str, limit: int | None = None) -> int:
    value = obj.get(field)
    # bool is an int subclass, but true/false is never a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputRejected("bad_field", f"field {field!r} must be a number, got {value!r:.40}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputRejected("bad_field", f"field {field!r} must be finite, got {value!r}")
        value = round(value)
    if limit is not None and abs(value) > limit:
        raise InputRejected("bad_field", f"field {field!r} out of range: {value!r}")
    return int(value)


def _string(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        raise InputRejected("bad_field", f"field {field!r} must be a string, got {value!r:.40}")
    return value


def _button(obj: dict[str, Any]) -> Button:
    value = obj.get("button")
    if value == "left" or value == "middle" or value == "right":
        return value
    raise InputRejected("bad_field", f"unknown button {value!r:.40}")


def _key(obj: dict[str, Any]) -> str:
    key = _string(obj, "key")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InputRejected("bad_field", f"bad key name {key!r:.40}")
    try:
        dom_key_to_keysym(key)
    except UnknownKeyError as e:
        raise InputRejected("bad_field", f"unknown key {key!r:.40}") from e
    return key


def _text(obj: dict[str, Any]) -> str:
    text = _string(obj, "text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # lone surrogates from \ud800 escapes
        raise InputRejected("bad_field", "text is not valid Unicode") from e
    if size > MAX_TEXT_BYTES:
        raise InputRejected("bad_field", f"text too long: {size} bytes > {MAX_TEXT_BYTES}")
    return text


def parse_input_message(raw: str | bytes) -> InputMessage:
    """Parse one data-channel message; raise :class:`ProtocolError` if malformed."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InputRejected("too_large",
                            f"message too large: {len(raw)} > {MAX_MESSAGE_BYTES}")
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputRejected("not_utf8", "message is not UTF-8") from e
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InputRejected("not_json", f"message is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise InputRejected("not_object", "message is not a JSON object")
    kind = obj.get("type")
    match kind:
        case "mouse_move":
            return MouseMove(x=_number(obj, "x", MAX_COORDINATE),
                             y=_number(obj, "y", MAX_COORDINATE))
        case "mouse_down":
            return MouseDown(button=_button(obj))
        case "mouse_up":
            return MouseUp(button=_button(obj))
        case "scroll":
            return Scroll(x=_number(obj, "x", MAX_COORDINATE), y=_number(obj, "y", MAX_COORDINATE),
                          dx=_number(obj, "dx", MAX_SCROLL), dy=_number(obj, "dy", MAX_SCROLL))
        case "key_down":
            return KeyDown(key=_key(obj))
        case "key_up":
            return KeyUp(key=_key(obj))
        case "text":
            return Text(text=_text(obj))
        case "clipboard":
            return Clipboard(text=_text(obj))
    raise InputRejected("unknown_type", f"unknown message type {kind!r:.40}")


def error_message(code: str, detail: str) -> str:
    """Server -> client error, e.g. ``error_message("not_in_control", "...")``."""
    return json.dumps({"type": "error", "code": code, "detail": detail})


def control_message(controller: Literal["agent", "human"]) -> str:
    """Server -> client notice that the session's controller changed."""
    if controller not in ("agent", "human"):
        raise ValueError(f"controller must be 'agent' or 'human', got {controller!r}")
    return json.dumps({"type": "control", "controller": controller})
