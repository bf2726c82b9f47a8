"""The X server's cookie: only the pod's two parts may open its display.

Each pod's Xvfb runs with ``-auth`` on a fresh MIT-MAGIC-COOKIE-1 that only the
app user (owner) and the runtime agent (group) can read; every client of the
display (the apps, the agent's capture and injector, x11vnc) finds it through
``XAUTHORITY``. The X socket folder is open to those two uids only. So another local user can neither
reach the socket nor, if it could, open the display without the cookie.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
from pathlib import Path
from typing import Final

__all__ = ["POD_HOSTNAME", "XAUTHORITY_IN_POD", "read_cookie", "secure_x11_dir", "write_xauthority"]

XAUTHORITY_IN_POD: Final = "/run/vr-xauth/Xauthority"
"""Where both parts of a pod see the cookie file (read-only)."""
_FAMILY_WILD: Final = 0xFFFF
"""An entry for any host name: what libX11 clients (xterm, Chromium, x11vnc) use."""
_FAMILY_LOCAL: Final = 256
POD_HOSTNAME: Final = "visual-runtime"
"""Both parts of a pod carry this host name: python-xlib (the agent's capture and
injector) only matches FamilyLocal entries by host name, never FamilyWild ones."""
_PROTOCOL: Final = b"MIT-MAGIC-COOKIE-1"


def _field(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def write_xauthority(path: Path, uid_app: int, uid_agent: int) -> None:
    """Write a fresh cookie (for any display number) to *path*: mode 0440, owner the
    app user, group the runtime agent's (its gid equals its uid); never through a link."""
    cookie = secrets.token_bytes(16)
    entry = b"".join(
        struct.pack(">H", family) + _field(address) + _field(b"") + _field(_PROTOCOL)
        + _field(cookie)
        for family, address in ((_FAMILY_WILD, b""), (_FAMILY_LOCAL, POD_HOSTNAME.encode()),
                                # a docker agent in the host's network has its name
                                (_FAMILY_LOCAL, socket.gethostname().encode())))
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, entry)
        os.fchown(fd, uid_app, uid_agent)
        os.fchmod(fd, 0o440)
    finally:
        os.close(fd)


def read_cookie(path: Path) -> bytes:
    """The cookie of the first MIT-MAGIC-COOKIE-1 entry in an Xauthority file."""
    data = path.read_bytes()
    pos = 0
    while pos + 2 <= len(data):
        pos += 2  # family
        fields = []
        for _ in range(4):
            (size,) = struct.unpack_from(">H", data, pos)
            fields.append(data[pos + 2:pos + 2 + size])
            pos += 2 + size
        if fields[2] == _PROTOCOL:
            return fields[3]
    raise ValueError(f"no {_PROTOCOL.decode()} entry in {path}")


def secure_x11_dir(path: Path, uid_app: int, uid_agent: int) -> None:
    """The X socket folder: the runtime agent's, writable by the app user's group
    (Xvfb creates the socket there), nothing for others (mode 0770). Not the app
    user's: Xvfb resets a folder it owns to the usual 1777 (xtrans)."""
    os.chown(path, uid_agent, uid_app)
    path.chmod(0o770)
