"""Only the pod's two parts can open a session's X display (issue 20, H1).

Xvfb used to run without ``-auth`` in a world-searchable socket folder, so any
local user could read every session's screen and type into it. Now the X
socket folder is the runtime agent's (group: the app user's), mode 0770, and
Xvfb wants a MIT-MAGIC-COOKIE-1 only those two uids can read
(``gateway/backends/xauth.py``). Checked with a raw X11 connection set-up on
the session's real socket: another local uid is stopped by the folder (and
cannot read the cookie), root without the cookie is refused by the X server
itself, root with it is let in (so the probe can tell the cases apart), and
the session's own apps and runtime agent work (the session serves frames and
its xterm's X client connects).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from gateway.appkeys import CONFIG, MANAGER
from gateway.backends.xauth import read_cookie
from tests.gateway_fixtures import Gateway
from tests.security.helpers import run_in_app

pytestmark = pytest.mark.timeout(180)

NOBODY = 65534

X_SETUP = r'''
import socket, struct, sys

def x_setup(path, cookie=b""):
    """Status byte of an X11 connection set-up: 1 accepted, 0 refused, 2 more auth;
    or the errno name when the socket cannot be reached."""
    name = b"MIT-MAGIC-COOKIE-1" if cookie else b""
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(struct.pack("<BxHHHHxx", 0x6C, 11, 0, len(name), len(cookie))
                      + pad(name) + pad(cookie))
            reply = s.recv(8)
    except OSError as e:
        import errno
        return errno.errorcode.get(e.errno, str(e))
    return reply[0] if reply else "EOF"
'''
_ns: dict[str, Any] = {}
exec(X_SETUP, _ns)  # noqa: S102 - the same probe code in-process (as root) and as nobody
x_setup: Callable[..., int | str] = _ns["x_setup"]


def as_nobody(code: str) -> str:
    out = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         sys.executable, "-c", X_SETUP + code],
        capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


async def test_only_the_pod_opens_its_display(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    runtime = gw.extra["app"][CONFIG].runtime_dir / sid
    x_socket, xauth = runtime / "x11" / "X0", runtime / "Xauthority"
    pod = gw.extra["app"][MANAGER].get(sid).pod
    uid_app, uid_agent = int(pod["uid_app"]), int(pod["uid_agent"])

    # The folder and the cookie belong to the pod's two uids only.
    folder = (runtime / "x11").stat()
    assert (folder.st_uid, folder.st_gid, folder.st_mode & 0o7777) == (uid_agent, uid_app, 0o770)
    cookie_file = xauth.stat()
    assert (cookie_file.st_uid, cookie_file.st_gid, cookie_file.st_mode & 0o7777) == (
        uid_app, uid_agent, 0o440)

    # Another local user: cannot reach the socket, cannot read the cookie.
    assert as_nobody(f"print(x_setup({str(x_socket)!r}))") == "EACCES"
    assert as_nobody(f"""
try:
    open({str(xauth)!r}, "rb")
    print("read")
except PermissionError:
    print("EACCES")
""") == "EACCES"
    # Root reaches the socket, but the X server refuses it without the cookie ...
    assert x_setup(str(x_socket)) == 0
    assert x_setup(str(x_socket), os.urandom(16)) == 0
    # ... and accepts the right one (the probe can tell the cases apart).
    assert x_setup(str(x_socket), read_cookie(xauth)) == 1

    # The pod's own parts work: an X client in the app sandbox, and the runtime agent.
    result = await run_in_app(gw, sid, ["xdotool", "getmouselocation"])
    assert result.code == 0, result.err
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.read()).startswith(b"\x89PNG")
    await gw.stop(sid)

