"""Connect python-xlib to a session's X server through its socket path.

The app sandbox's Xvfb listens on ``/tmp/.X11-unix/X0`` inside the sandbox,
which the local backend binds from ``<runtime_dir>/<sid>/x11`` on the host.
python-xlib only knows ``/tmp/.X11-unix/X<n>`` (or the abstract socket), so
:func:`open_session_display` hands it a socket already connected to the path.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from unittest import mock

from Xlib import display as xdisplay
from Xlib.support import unix_connect

from gateway.backends.xauth import read_cookie


def open_session_display(x_socket: Path) -> xdisplay.Display:
    def get_socket(dname: str, protocol: Any, host: Any, dno: int) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(x_socket))
        return s

    # The pod's X server wants its cookie (gateway/backends/xauth.py); root reads it
    # from the runtime folder beside the socket's folder.
    cookie = read_cookie(x_socket.parent.parent / "Xauthority")
    with mock.patch.object(unix_connect, "get_socket", get_socket), \
            mock.patch.object(unix_connect, "get_auth",
                              lambda *_: (b"MIT-MAGIC-COOKIE-1", cookie)):
        return xdisplay.Display(":0")


def x_socket_of(runtime_dir: Path, sid: str) -> Path:
    return runtime_dir / sid / "x11" / "X0"


def pressed_keycodes(disp: xdisplay.Display) -> list[int]:
    """Keycodes the X server reports as down."""
    keymap = disp.query_keymap()
    return [i * 8 + bit for i, byte in enumerate(keymap) for bit in range(8) if byte >> bit & 1]


def pressed_buttons(disp: xdisplay.Display) -> int:
    """The pointer's button mask (Button1Mask..Button5Mask bits)."""
    return int(disp.screen().root.query_pointer().mask) & 0x1F00
