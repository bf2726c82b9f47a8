"""A session's runtime agent talks only to the session's own X server.

Abstract unix sockets (``@/tmp/.X11-unix/X0``) belong to a network namespace. The
local backend runs the runtime agent in the host's, where the host (or any local
user, or another test) may run an X server on display :0 — the number every
session's Xvfb uses inside its sandbox. libxcb (the agent's screen capture, and
x11vnc through libX11) tries the abstract socket first, so it used to reach that
host server instead of the session's: the session failed ("display ':0' is
320x240"), or with matching sizes it would have shown and recorded the host's
screen. Here a decoy Xvfb of another size holds the host's display :0 while a
session starts; the session must come up, its screenshot must be the session's
size, and noVNC's ServerInit (through the gateway, from x11vnc) must announce the
session's framebuffer, not the decoy's.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import require_binary
from tests.gateway_fixtures import Gateway

DECOY = (320, 240)
SESSION = (640, 480)


def _abstract_display_zero_listens() -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect("\0/tmp/.X11-unix/X0")
    except OSError:
        return False
    finally:
        probe.close()
    return True


@pytest.fixture
def decoy_on_host_display_zero() -> Iterator[None]:
    """An X server of the wrong size on the host's :0 (abstract socket, host netns)."""
    if _abstract_display_zero_listens():
        raise AssertionError("something already serves display :0 on this host; the test needs "
                             "its own decoy there (is a desktop or another Xvfb on :0?)")
    proc = subprocess.Popen(
        [require_binary("Xvfb"), ":0", "-screen", "0", f"{DECOY[0]}x{DECOY[1]}x24",
         "-nolisten", "tcp"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if _abstract_display_zero_listens():
                break
            if proc.poll() is not None:
                raise AssertionError("the decoy Xvfb :0 did not start")
            subprocess.run(["sleep", "0.05"], check=True)
        else:
            raise AssertionError("the decoy Xvfb :0 never listened")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def _rfb_framebuffer(gw: Gateway, sid: str, token: str) -> tuple[int, int]:
    """Width and height from x11vnc's ServerInit, through the gateway's noVNC socket."""
    url = gw.url(f"/sessions/{sid}/vnc/websockify")
    buffer = bytearray()
    async with gw.http.ws_connect(url, protocols=("binary",),
                                  headers={"Authorization": f"Bearer {token}"}) as ws:

        async def read(n: int) -> bytes:
            while len(buffer) < n:
                msg = await asyncio.wait_for(ws.receive_bytes(), timeout=30)
                buffer.extend(msg)
            chunk = bytes(buffer[:n])
            del buffer[:n]
            return chunk

        version = await read(12)
        assert version.startswith(b"RFB 003.")
        await ws.send_bytes(b"RFB 003.008\n")
        count = (await read(1))[0]
        types = await read(count)
        assert 1 in types, types  # None: x11vnc runs -nopw behind the gateway's tokens
        await ws.send_bytes(b"\x01")
        assert struct.unpack(">I", await read(4))[0] == 0  # SecurityResult OK
        await ws.send_bytes(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", await read(4))
    return width, height


async def test_session_ignores_an_x_server_on_the_hosts_display_zero(
        decoy_on_host_display_zero: None, light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution=f"{SESSION[0]}x{SESSION[1]}")
    sid = session["session_id"]
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200
        assert _png_size(await resp.read()) == SESSION
    for kind in ("view", "control"):
        assert await _rfb_framebuffer(gw, sid, session["tokens"][kind]) == SESSION, kind
