"""How x11vnc (libvncserver 0.9.14, Debian 12) splits an RFB client->server stream.

A reference model for the noVNC input filter's property test, written from
``src/libvncserver/rfbserver.c`` and ``auth.c`` of LibVNCServer-0.9.14 (the
library x11vnc links here): the version is read with
``sscanf(pv, "RFB %03d.%03d\\n")``, major must be 3, a minor below 7 means the
3.3 handshake (the server picks security type None, no client byte), else the
client picks a type from the offered list (only None with ``-nopw``); then
one ClientInit byte (none for Apple's 3.889), then normal messages. :func:`libvnc_inputs` returns the
input messages x11vnc would act on, in order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EXT_CLIPBOARD = 0xC0A1E5CE
"""rfbEncodingExtendedClipboard: a SetEncodings listing it makes negative ClientCutText
lengths mean the extended format."""
_WS = b" \t\n\v\f\r"


@dataclass(frozen=True)
class Input:
    kind: str
    """"key", "pointer", "cut_text" or "xvp"."""
    data: bytes


def _scan_int(s: bytes, i: int, width: int = 3) -> tuple[int, int] | None:
    """glibc ``%03d``: skip white space, then up to *width* chars of [+-]digits."""
    while i < len(s) and s[i] in _WS:
        i += 1
    start = j = i
    if j < len(s) and s[j] in b"+-":
        j += 1
    digits = j
    while j < len(s) and j - start < width and s[j] in b"0123456789":
        j += 1
    if j == digits:
        return None
    return int(s[start:j]), j


def sscanf_version(pv: bytes) -> tuple[int, int] | None:
    """``sscanf(pv, "RFB %03d.%03d\\n", &major, &minor) == 2`` on the NUL-terminated buffer."""
    s = pv.split(b"\0", 1)[0]
    if not s.startswith(b"RFB"):
        return None
    i = 3
    while i < len(s) and s[i] in _WS:  # the format's ' ' matches any run of white space
        i += 1
    major = _scan_int(s, i)
    if major is None:
        return None
    i = major[1]
    if i >= len(s) or s[i] != ord("."):
        return None
    minor = _scan_int(s, i + 1)
    if minor is None:
        return None
    return major[0], minor[0]


_FIXED = {0: 20, 3: 10, 4: 8, 5: 6, 8: 4, 9: 4, 10: 6, 15: 4, 250: 4}
"""Message types 0.9.14 reads with a fixed size (and does not close on)."""


def libvnc_inputs(stream: bytes) -> list[Input]:
    """The input messages x11vnc acts on when a client sends *stream* (then EOF)."""
    b = stream
    if len(b) < 12:
        return []
    version = sscanf_version(b[:12])
    if version is None or version[0] != 3:
        return []
    pos = 12
    if version[1] >= 7:  # 3.7/3.8 (and 3.9+, 3.14, 3.889...): the client picks the type
        if len(b) < pos + 1 or b[pos] != 1:
            return []
        pos += 1
    if version[1] != 889:  # Apple's 3.889 gets an implicit ClientInit (auth.c)
        if len(b) < pos + 1:
            return []
        pos += 1
    inputs: list[Input] = []
    extended_clipboard = False
    while pos < len(b):
        kind = b[pos]
        if kind in _FIXED:
            size = _FIXED[kind]
        elif kind == 2:  # SetEncodings
            if len(b) < pos + 4:
                return inputs
            count = struct.unpack_from(">H", b, pos + 2)[0]
            size = 4 + 4 * count
            if len(b) >= pos + size:
                encodings = struct.unpack_from(f">{count}I", b, pos + 4)
                extended_clipboard = extended_clipboard or EXT_CLIPBOARD in encodings
        elif kind == 6:  # ClientCutText
            if len(b) < pos + 8:
                return inputs
            length = struct.unpack_from(">I", b, pos + 4)[0]
            if extended_clipboard and length & 0x80000000:
                length = (-length) & 0xFFFFFFFF
            if length > 1 << 20:
                return inputs  # "too big cut text": the client is closed
            size = 8 + length
        elif kind == 251:  # SetDesktopSize
            if len(b) < pos + 8:
                return inputs
            size = 8 + 16 * b[pos + 6]
        else:  # FixColourMapEntries, file transfer, text chat, unknown: closed
            return inputs
        if len(b) < pos + size:
            return inputs
        message = b[pos:pos + size]
        pos += size
        if kind == 4:
            inputs.append(Input("key", message))
        elif kind == 5:
            inputs.append(Input("pointer", message))
        elif kind == 6:
            inputs.append(Input("cut_text", message))
        elif kind == 250:
            inputs.append(Input("xvp", message))
    return inputs
