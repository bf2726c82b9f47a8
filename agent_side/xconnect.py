"""X connections of the runtime agent go through the session's socket file, and nowhere else.

On Linux an X server also listens on an *abstract* unix socket
(``@/tmp/.X11-unix/X<n>``), and libxcb tries that one first. Abstract sockets
belong to a network namespace, not to a filesystem: the session's Xvfb listens
on its own in the app sandbox's namespace, but the runtime agent runs in the
host's, where ``@/tmp/.X11-unix/X0`` is whatever X server the host (or a local
user) runs on that display number. Through plain ``xcb_connect(":0")`` the
agent's screen capture (mss, on libxcb) would grab that server's screen instead
of the session's. python-xlib prefers the socket file but falls back to the
abstract socket and then TCP when the file is missing.

So every X connection of the agent is made here: the socket file under
``/tmp/.X11-unix`` (the pod's socket folder, bind-mounted) is connected by path,
the session's cookie is looked up as python-xlib does (``XAUTHORITY``), and
libxcb gets the ready socket through ``xcb_connect_to_fd``. Nothing falls back.

Exceptions: :class:`XConnectError`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from ctypes import POINTER, Structure, addressof, byref, c_char_p, c_int
from typing import Any, Final

from Xlib import display as xdisplay
from Xlib.support import unix_connect

from .errors import AgentSideError

__all__ = ["SOCKET_DIR", "XConnectError", "mss_via_socket_file", "open_xlib", "socket_path"]

SOCKET_DIR: Final = "/tmp/.X11-unix"
_LOCAL_DISPLAY = re.compile(r"^(?:unix)?:(\d+)(?:\.(\d+))?$")
_PATCH_LOCK = threading.Lock()


class XConnectError(AgentSideError):
    """The display is not a local one, or its socket file cannot be connected."""


def _parse(display: str) -> tuple[int, int]:
    match = _LOCAL_DISPLAY.match(display)
    if match is None:
        raise XConnectError(f"display {display!r} is not a local display (':N' or ':N.S')")
    return int(match.group(1)), int(match.group(2) or 0)


def socket_path(display: str) -> str:
    """``/tmp/.X11-unix/X<n>`` for ``:<n>``."""
    number, _ = _parse(display)
    return f"{SOCKET_DIR}/X{number}"


def _connect_file(display: str) -> socket.socket:
    path = socket_path(display)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise XConnectError(f"cannot connect to the X socket {path}: {e.strerror or e}") from e
    return sock


def _auth(sock: socket.socket, display: str) -> tuple[bytes, bytes]:
    """(auth name, auth data) for this display from ``XAUTHORITY``, as python-xlib picks it."""
    number, _ = _parse(display)
    name, data = unix_connect.new_get_auth(sock, display, None, "", number)
    return bytes(name), bytes(data)


def open_xlib(display: str) -> xdisplay.Display:
    """A python-xlib ``Display`` on the session's socket file (never abstract, never TCP)."""
    _connect_file(display).close()  # fails clearly when the file is missing or dead
    # ``unix/:N`` makes python-xlib use the unix socket and never fall back to TCP; with the
    # file present (checked above) it connects by path, not through the abstract namespace.
    number, screen = _parse(display)
    return xdisplay.Display(f"unix/:{number}.{screen}")


class _AuthInfo(Structure):
    _fields_ = (("namelen", c_int), ("name", c_char_p), ("datalen", c_int), ("data", c_char_p))


def _xcb_connect_by_path(display: str) -> tuple[Any, int]:
    """What ``mss.linux.xcb.connect`` returns, over the socket file (xcb_connect_to_fd)."""
    from mss.linux import xcb
    from mss.linux.xcbhelpers import Connection

    _, screen = _parse(display)
    sock = _connect_file(display)
    name, data = _auth(sock, display)
    fd = sock.detach()  # libxcb owns the fd from here and closes it on disconnect
    xcb.initialize()
    lib = xcb.LIB.xcb
    lib.xcb_connect_to_fd.argtypes = [c_int, POINTER(_AuthInfo)]
    lib.xcb_connect_to_fd.restype = POINTER(Connection)
    auth = _AuthInfo(len(name), name, len(data), data) if name else None
    conn_p = lib.xcb_connect_to_fd(fd, byref(auth) if auth is not None else None)
    error = lib.xcb_connection_has_error(conn_p)
    if error != 0:
        lib.xcb_disconnect(conn_p)
        raise XConnectError(f"the X server on {socket_path(display)} refused the connection "
                            f"(xcb error {error}; a missing or wrong cookie?)")
    # The same preparation mss does after xcb_connect.
    for ext in (xcb.LIB.randr_id, xcb.LIB.render_id, xcb.LIB.shm_id, xcb.LIB.xfixes_id):
        xcb.prefetch_extension_data(conn_p, ext)
    xcb._ATOM_CACHE[addressof(conn_p.contents)] = {}  # noqa: SLF001 - mss keeps it per connection
    return conn_p.contents, screen


@contextlib.contextmanager
def mss_via_socket_file(display: str) -> Iterator[None]:
    """While active, ``mss.MSS(display=...)`` connects through :func:`_xcb_connect_by_path`.

    mss (10.x) connects in its constructor through ``mss.linux.xcb.connect``; it is
    replaced for the duration of the block only, under a lock.
    """
    from mss.linux import xcb

    def connect(display_: str | bytes | None = None) -> tuple[Any, int]:
        return _xcb_connect_by_path(display)

    with _PATCH_LOCK:
        original = xcb.connect
        xcb.connect = connect  # type: ignore[assignment]
        try:
            yield
        finally:
            xcb.connect = original
