"""Pure parts of the transports: the RFB input filter and the stream framing."""

from __future__ import annotations

import struct

import pytest

from agent_side.vnc import RfbInputFilter, RfbProtocolError
from agent_side.wsstream import HEADER, pack_frame

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"


def test_filter_passes_handshake_and_non_input() -> None:
    f = RfbInputFilter(lambda: False)
    encodings = struct.pack(">BBH", 2, 0, 2) + struct.pack(">ii", 0, -223)
    update = struct.pack(">BBHHHH", 3, 1, 0, 0, 100, 100)
    assert f.feed(HANDSHAKE + encodings + update) == HANDSHAKE + encodings + update


def test_filter_drops_input_without_control_even_when_split() -> None:
    allowed = False
    f = RfbInputFilter(lambda: allowed)
    f.feed(HANDSHAKE)
    pointer = struct.pack(">BBHH", 5, 1, 10, 20)
    key = struct.pack(">BBxxI", 4, 1, 0x61)
    cut = struct.pack(">Bxxxi", 6, 3) + b"abc"
    update = struct.pack(">BBHHHH", 3, 1, 0, 0, 1, 1)
    data = pointer + key + cut + update
    out = b"".join(f.feed(data[i:i + 3]) for i in range(0, len(data), 3))
    assert out == update
    assert f.dropped == 3
    allowed = True
    assert f.feed(pointer + key) == pointer + key


def test_filter_fails_closed_on_unknown_messages() -> None:
    f = RfbInputFilter(lambda: True)
    f.feed(HANDSHAKE)
    with pytest.raises(RfbProtocolError):
        f.feed(b"\x99\x00\x00\x00")


def test_filter_refuses_other_security_types() -> None:
    f = RfbInputFilter(lambda: True)
    with pytest.raises(RfbProtocolError):
        f.feed(b"RFB 003.008\n\x02")


def test_pack_frame_header() -> None:
    data = pack_frame(b"\x00\x00\x00\x01\x65", 123456789, True)
    kind, flags, _, pts = HEADER.unpack_from(data)
    assert (kind, flags, pts) == (1, 1, 123456789)
    assert data[HEADER.size:] == b"\x00\x00\x00\x01\x65"
    assert HEADER.unpack_from(pack_frame(b"", 5, False))[1] == 0
