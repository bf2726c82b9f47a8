"""Wire formats at the HTTP edge: request validation with exact bounds."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import FieldError, ValidationProblem, bad_request, unsupported_media_type
from gateway.spec import SessionSpec

_RESOLUTION = re.compile(r"^([0-9]{3,4})x([0-9]{3,4})$")
_CREATE_FIELDS = frozenset(
    {
        "resolution",
        "timeout_minutes",
        "idle_timeout_minutes",
        "enable_recording",
        "enable_file_transfer",
        "network",
        "start_url",
        "agent_resolution",
    }
)
_AGENT_RESOLUTION = re.compile(r"^([0-9]{2,4})x([0-9]{2,4})$")
MIN_AGENT_SIDE = 64
"""Smallest agent picture side: below it no interface is legible."""


MAX_JSON_DEPTH = 32
"""Deepest nesting a request body may have (no API body needs more than a few levels;
deeper ones used to overflow the parser's or a validator's recursion: a 500)."""


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """Body as a JSON object: 415 for another content type, 400 when malformed."""
    raw = await request.read()
    if not raw.strip() and allow_empty:
        return {}
    if request.content_type != "application/json":
        raise unsupported_media_type("application/json", request.content_type)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"body is not valid JSON: {e}") from e
    except RecursionError:
        raise bad_request(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise bad_request(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(body, dict):
        raise bad_request(f"body must be a JSON object, not {type(body).__name__}")
    return body


def _int_field(body: dict[str, Any], name: str, default: int, lo: int, hi: int,
               errors: list[FieldError]) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(name, f"must be an integer, got {value!r}"))
        return default
    if not lo <= value <= hi:
        errors.append(FieldError(name, f"must be between {lo} and {hi}, got {value}"))
    return value


def _bool_field(body: dict[str, Any], name: str, default: bool, errors: list[FieldError]) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        errors.append(FieldError(name, f"must be a boolean, got {value!r}"))
        return default
    return value


def parse_resolution(value: object, errors: list[FieldError]) -> tuple[int, int]:
    default = (1600, 900)
    if not isinstance(value, str):
        errors.append(FieldError("resolution", f"must be a string 'WxH', got {value!r}"))
        return default
    match = _RESOLUTION.match(value)
    if not match:
        errors.append(FieldError("resolution", f"must look like '1600x900', got {value!r}"))
        return default
    width, height = int(match.group(1)), int(match.group(2))
    if not 320 <= width <= 3840:
        errors.append(FieldError("resolution", f"width must be 320-3840, got {width}"))
    if not 240 <= height <= 2160:
        errors.append(FieldError("resolution", f"height must be 240-2160, got {height}"))
    if width % 2 or height % 2:
        errors.append(FieldError("resolution", f"width and height must be even, got {value!r}"))
    return width, height


def parse_start_url(value: object, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError("start_url", f"must be a string or null, got {value!r}"))
        return None
    if len(value) > 2048:
        errors.append(FieldError("start_url", "must be at most 2048 characters"))
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(FieldError("start_url", f"must be an http(s) URL, got {value!r}"))
        return None
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        errors.append(FieldError("start_url", "must not contain whitespace or control characters"))
        return None
    return value


def parse_create_session(body: dict[str, Any]) -> SessionSpec:
    """Validate a create-session body; raise a 422 listing every bad field."""
    errors: list[FieldError] = []
    for name in sorted(set(body) - _CREATE_FIELDS):
        errors.append(FieldError(name, f"unknown field {name!r}"))
    resolution = parse_resolution(body.get("resolution", "1600x900"), errors)
    timeout = _int_field(body, "timeout_minutes", 60, 1, 1440, errors)
    idle = _int_field(body, "idle_timeout_minutes", 15, 0, 1440, errors)
    recording = _bool_field(body, "enable_recording", True, errors)
    files = _bool_field(body, "enable_file_transfer", True, errors)
    network = body.get("network", "egress")
    if network not in ("none", "egress"):
        errors.append(FieldError("network", f"must be 'none' or 'egress', got {network!r}"))
    start_url = parse_start_url(body.get("start_url"), errors)
    agent_resolution = parse_agent_resolution(body.get("agent_resolution"), resolution, errors)
    if errors:
        raise ValidationProblem(errors)
    return SessionSpec(
        resolution=resolution,
        timeout_minutes=timeout,
        idle_timeout_minutes=idle,
        enable_recording=recording,
        enable_file_transfer=files,
        network=str(network),
        start_url=start_url,
        agent_resolution=agent_resolution,
    )


def parse_agent_resolution(value: object, resolution: tuple[int, int],
                           errors: list[FieldError]) -> tuple[int, int] | None:
    """``"1280x720"`` or null; each side between 64 and the session's (never larger)."""
    if value is None:
        return None
    match = _AGENT_RESOLUTION.match(value) if isinstance(value, str) else None
    if match is None:
        errors.append(FieldError("agent_resolution",
                                 f"must be null or a string like '1280x720', got {value!r:.60}"))
        return None
    width, height = int(match.group(1)), int(match.group(2))
    if not (MIN_AGENT_SIDE <= width <= resolution[0] and MIN_AGENT_SIDE <= height <= resolution[1]):
        errors.append(FieldError(
            "agent_resolution", f"{value} must be at least {MIN_AGENT_SIDE}x{MIN_AGENT_SIDE} and "
                                f"at most the resolution {resolution[0]}x{resolution[1]}"))
        return None
    if (width, height) == resolution:
        return None
    return width, height


def parse_control_request(body: dict[str, Any]) -> str:
    errors: list[FieldError] = []
    for name in sorted(set(body) - {"action"}):
        errors.append(FieldError(name, f"unknown field {name!r}"))
    action = body.get("action")
    if action not in ("take", "release"):
        errors.append(FieldError("action", f"must be 'take' or 'release', got {action!r}"))
    if errors:
        raise ValidationProblem(errors)
    return str(action)
