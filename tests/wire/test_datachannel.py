"""Data-channel wire format: every message type, and every way to be malformed."""

from __future__ import annotations

import json

import pytest

from wire.datachannel import (
    MAX_TEXT_BYTES,
    Clipboard,
    KeyDown,
    KeyUp,
    MouseDown,
    MouseMove,
    MouseUp,
    Scroll,
    Text,
    control_message,
    error_message,
    parse_input_message,
)
from wire.errors import ProtocolError, WireError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type":"mouse_move","x":10,"y":20}', MouseMove(10, 20)),
        ('{"type":"mouse_move","x":10.6,"y":-3}', MouseMove(11, -3)),
        ('{"type":"mouse_down","button":"left"}', MouseDown("left")),
        ('{"type":"mouse_down","button":"middle"}', MouseDown("middle")),
        ('{"type":"mouse_up","button":"right"}', MouseUp("right")),
        ('{"type":"scroll","x":1,"y":2,"dx":0,"dy":-3}', Scroll(1, 2, 0, -3)),
        ('{"type":"key_down","key":"a"}', KeyDown("a")),
        ('{"type":"key_up","key":"Enter"}', KeyUp("Enter")),
        ('{"type":"key_down","key":"€"}', KeyDown("€")),
        ('{"type":"key_down","key":"ArrowLeft","code":"ArrowLeft"}', KeyDown("ArrowLeft")),
        ('{"type":"text","text":"hello ✓"}', Text("hello ✓")),
        ('{"type":"text","text":""}', Text("")),
        ('{"type":"clipboard","text":"x\\ny"}', Clipboard("x\ny")),
    ],
)
def test_valid_messages(raw: str, expected: object) -> None:
    assert parse_input_message(raw) == expected
    assert parse_input_message(raw.encode()) == expected


def test_messages_are_frozen() -> None:
    msg = parse_input_message('{"type":"mouse_move","x":1,"y":2}')
    with pytest.raises(AttributeError):
        msg.x = 5  # type: ignore[misc, union-attr]


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "{",
        b"\xff\xfe",
        "[1,2]",
        '"mouse_move"',
        "null",
        "{}",
        '{"type":"warp"}',
        '{"type":7}',
        '{"type":"mouse_move","x":1}',
        '{"type":"mouse_move","x":"1","y":2}',
        '{"type":"mouse_move","x":true,"y":2}',
        '{"type":"mouse_move","x":null,"y":2}',
        '{"type":"mouse_move","x":NaN,"y":2}',
        '{"type":"mouse_move","x":Infinity,"y":2}',
        '{"type":"mouse_down"}',
        '{"type":"mouse_down","button":"fourth"}',
        '{"type":"mouse_up","button":1}',
        '{"type":"scroll","x":1,"y":2,"dx":0}',
        '{"type":"scroll","x":1,"y":2,"dx":0,"dy":"3"}',
        '{"type":"scroll","x":1,"y":2,"dx":0,"dy":100000}',
        '{"type":"key_down"}',
        '{"type":"key_down","key":""}',
        '{"type":"key_down","key":65}',
        '{"type":"key_down","key":"NoSuchKey"}',
        '{"type":"key_up","key":"' + "x" * 100 + '"}',
        '{"type":"key_down","key":"\\u0007"}',
        '{"type":"text"}',
        '{"type":"text","text":["a"]}',
        '{"type":"text","text":"\\ud800"}',
        '{"type":"clipboard","text":5}',
        "[" * 100_000,
    ],
)
def test_malformed_messages_raise_protocol_error(raw: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_input_message(raw)


def test_protocol_error_is_agent_side_error() -> None:
    assert issubclass(ProtocolError, WireError)


def test_text_size_limit_counts_utf8_bytes() -> None:
    ok = "a" * MAX_TEXT_BYTES
    assert parse_input_message(json.dumps({"type": "text", "text": ok})) == Text(ok)
    with pytest.raises(ProtocolError):
        parse_input_message(json.dumps({"type": "text", "text": ok + "a"}))
    wide = "€" * (MAX_TEXT_BYTES // 3 + 1)  # 3 bytes each in UTF-8
    with pytest.raises(ProtocolError):
        parse_input_message(json.dumps({"type": "clipboard", "text": wide}, ensure_ascii=False))


def test_oversized_raw_message_rejected_before_parsing() -> None:
    with pytest.raises(ProtocolError):
        parse_input_message(" " * (5 * MAX_TEXT_BYTES))


def test_server_messages() -> None:
    assert json.loads(error_message("not_in_control", "take control first")) == {
        "type": "error", "code": "not_in_control", "detail": "take control first"}
    assert json.loads(control_message("human")) == {"type": "control", "controller": "human"}
    assert json.loads(control_message("agent")) == {"type": "control", "controller": "agent"}
    with pytest.raises(ValueError):
        control_message("nobody")  # type: ignore[arg-type]
