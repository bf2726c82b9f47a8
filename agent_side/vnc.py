"""The noVNC fallback: a lazily started x11vnc and a WebSocket bridge to it.

x11vnc listens ONLY on a unix socket in the agent's run folder
(``-unixsock``, ``-rfbport 0``), never on a TCP port. It starts with the
first VNC viewer and stays up (``-forever -shared``) until the agent stops.
The gateway proxies the browser's WebSocket (noVNC) to ``GET /vnc`` here over
the agent's unix socket; :class:`VncBridge` pumps the bytes to x11vnc.

Control rules are enforced on the server side, in the bridge: the RFB
client->server stream is parsed (:class:`RfbInputFilter`) and every input
message (key, pointer, clipboard, XVP) is dropped unless the viewer's token
holds control right now. A view token therefore can never inject input, and
a control token only after a ``take``. A message type the filter does not
know ends the connection (fail closed).

The filter only works if it splits the stream exactly where x11vnc
(libvncserver) does. The handshake is where they could disagree:
libvncserver reads the client's version with ``sscanf("RFB %03d.%03d\\n")``
and treats every 3.x below 3.7 as 3.3 (no security-type byte), so a client
saying ``RFB 003.006`` would put a filter that only knows ``003.003`` one
byte out of step. The filter therefore pins the handshake: it accepts only
the three byte-exact versions it implements (:data:`RFB_VERSIONS`) and ends
the connection on anything else, so x11vnc never parses a version the filter
did not.

View tokens are not even connected to the x11vnc that can inject: they get a
second, lazily started x11vnc run with ``-viewonly -nosel`` (libvncserver
drops every key, pointer and clipboard message itself, and the session's
clipboard is never sent to them), behind the same filter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aiohttp import WSMsgType, web

from .errors import AgentSideError
from .inputs import InputHandler

__all__ = ["RFB_VERSIONS", "RfbInputFilter", "RfbProtocolError", "VncBridge", "VncServer",
           "X11VNC_ARGS", "X11VNC_VIEW_ONLY_ARGS"]

logger = logging.getLogger(__name__)

X11VNC_ARGS: Final = ("-shared", "-forever", "-ncache", "0", "-defer", "5", "-wait", "5",
                      "-nowait_bog", "-nopw", "-norc", "-noipv6", "-nolookup", "-noremote",
                      "-nocmds", "-quiet", "-noshm", "-rfbport", "0")
"""Tuned for latency (MEASUREMENTS.md: ``-defer 5 -wait 5 -nowait_bog``), no TCP port.

``-noshm``: x11vnc's classic ``XShmAttach`` of a segment owned by the agent's
uid is refused by the app sandbox's Xvfb (``BadAccess``, another uid), so it
reads the screen with ``XGetImage``."""
X11VNC_VIEW_ONLY_ARGS: Final = ("-viewonly", "-nosel")
"""For view tokens: x11vnc itself ignores their input, and never sends them the
session's clipboard (``-nosel``: no selection exchange at all)."""
RFB_VERSIONS: Final = {b"RFB 003.003\n": "3.3", b"RFB 003.007\n": "3.7",
                       b"RFB 003.008\n": "3.8"}
"""The only ProtocolVersion messages the filter lets through, byte for byte. Each
means the same to libvncserver as to the filter; any other (``RFB 003.006``,
``RFB 3.8   \n``, ``RFB 003.0080``...) ends the connection."""
START_TIMEOUT_S: Final = 10.0
MAX_CUT_TEXT: Final = 1024 * 1024
"""Largest ClientCutText (clipboard) a viewer may send; the filter buffers a whole
message, so a bigger declared length would let one viewer exhaust the agent's memory."""


OWN_NETNS: Final = ("unshare", "--user", "--map-root-user", "--net", "--")
"""x11vnc (libX11 on libxcb) tries the *abstract* socket ``@/tmp/.X11-unix/X<n>`` before
the socket file, and abstract sockets belong to a network namespace. Where the runtime
agent shares the host's (the local backend), that is whatever X server the host runs on
the same display number, not the session's. In an empty network namespace of its own
(an unprivileged user namespace makes that possible) x11vnc finds no abstract socket and
connects through the session's socket file; it serves on a unix socket, which needs no
network. The agent's own X connections avoid the abstract socket in
:mod:`agent_side.xconnect`."""

class VncError(AgentSideError):
    """x11vnc could not be started or reached."""


class RfbProtocolError(VncError):
    """The client sent something the input filter does not understand."""


class VncServer:
    """One x11vnc on the session's display, listening on a unix socket."""

    def __init__(self, display: str, socket_path: Path, session_id: str = "",
                 binary: str = "x11vnc", view_only: bool = False, own_netns: bool = False) -> None:
        self.display = display
        self.socket_path = socket_path
        self.view_only = view_only
        self.own_netns = own_netns
        """Run x11vnc in a network namespace of its own (see :data:`OWN_NETNS`)."""
        self._session_id = session_id
        self._binary = binary
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def ensure_started(self) -> Path:
        """Start x11vnc if needed; return its socket once it accepts connections."""
        async with self._lock:
            if self._closed:
                raise VncError("the VNC server is closed")
            if self.running:
                return self.socket_path
            exe = shutil.which(self._binary)
            if exe is None:
                raise VncError(f"{self._binary} is not installed")
            self.socket_path.unlink(missing_ok=True)
            argv = [exe, "-display", self.display, "-unixsock", str(self.socket_path),
                    *X11VNC_ARGS, *(X11VNC_VIEW_ONLY_ARGS if self.view_only else ())]
            if self.own_netns:
                argv = [*OWN_NETNS, *argv]
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                env={**os.environ, "DISPLAY": self.display},
            )
            logger.info("session %s: x11vnc pid %d on %s%s", self._session_id, self._proc.pid,
                        self.socket_path, " (view only)" if self.view_only else "")
            await self._wait_ready()
            return self.socket_path

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            if self._proc is None or self._proc.returncode is not None:
                raise VncError("x11vnc exited during start-up (see the agent log)")
            if self.socket_path.exists():
                try:
                    _, writer = await asyncio.open_unix_connection(str(self.socket_path))
                except OSError:
                    pass
                else:
                    writer.close()
                    await writer.wait_closed()
                    return
            if loop.time() > deadline:
                raise VncError(f"x11vnc did not listen within {START_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        """Stop x11vnc (idempotent)."""
        async with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            logger.info("session %s: x11vnc stopped", self._session_id)
        self.socket_path.unlink(missing_ok=True)


class RfbInputFilter:
    """Parses the RFB client->server stream; drops input unless ``allowed()``.

    ``feed(data)`` returns the bytes to forward. Handshake bytes pass through
    (security type None only, as x11vnc runs with ``-nopw``).
    """

    def __init__(self, allowed: Callable[[], bool]) -> None:
        self._allowed = allowed
        self._buf = bytearray()
        self._phase = "version"
        self.dropped = 0

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while True:
            size = self._next_size()
            if size is None or len(self._buf) < size:
                return bytes(out)
            chunk = bytes(self._buf[:size])
            del self._buf[:size]
            drop = self._phase == "messages" and self._is_input(chunk[0]) and not self._allowed()
            self._advance(chunk)  # raises before a unit the filter refuses is forwarded
            if drop:
                self.dropped += 1
            else:
                out += chunk

    def _advance(self, chunk: bytes) -> None:
        if self._phase == "version":
            version = RFB_VERSIONS.get(chunk)
            if version is None:
                raise RfbProtocolError(f"unsupported RFB version {chunk!r}")
            self._phase = "clientinit" if version == "3.3" else "security"
        elif self._phase == "security":
            if chunk[0] != 1:
                raise RfbProtocolError(f"unsupported security type {chunk[0]}")
            self._phase = "clientinit"
        elif self._phase == "clientinit":
            self._phase = "messages"

    @staticmethod
    def _is_input(kind: int) -> bool:
        return kind in (4, 5, 6, 250, 255)

    def _next_size(self) -> int | None:
        """Length of the next complete unit, None if more bytes are needed to know it."""
        b = self._buf
        if self._phase == "version":
            return 12
        if self._phase in ("security", "clientinit"):
            return 1
        if not b:
            return None
        kind = b[0]
        fixed = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}
        if kind in fixed:
            return fixed[kind]
        if kind == 2:  # SetEncodings
            return None if len(b) < 4 else 4 + 4 * struct.unpack_from(">H", b, 2)[0]
        if kind == 6:  # ClientCutText (negative length = extended clipboard)
            if len(b) < 8:
                return None
            length = abs(struct.unpack_from(">i", b, 4)[0])
            if length > MAX_CUT_TEXT:
                raise RfbProtocolError(f"clipboard of {length} bytes > {MAX_CUT_TEXT}")
            return 8 + length
        if kind == 248:  # ClientFence
            return None if len(b) < 9 else 9 + b[8]
        if kind == 251:  # SetDesktopSize
            return None if len(b) < 8 else 8 + 16 * b[6]
        if kind == 255:  # QEMU client message: only the extended key event
            if len(b) < 2:
                return None
            if b[1] == 0:
                return 12
        raise RfbProtocolError(f"unknown RFB client message type {kind}")


class VncBridge:
    """``GET /vnc``: a noVNC WebSocket (proxied by the gateway) to x11vnc."""

    def __init__(self, server: VncServer, inputs: InputHandler, session_id: str = "",
                 view_server: VncServer | None = None) -> None:
        self._server = server
        self._view_server = view_server or VncServer(
            server.display, server.socket_path.with_name("vnc-view.sock"), session_id,
            view_only=True, own_netns=server.own_netns)
        """The ``-viewonly -nosel`` x11vnc that view tokens are connected to."""
        self._inputs = inputs
        self._session_id = session_id
        self._sockets: set[web.WebSocketResponse] = set()
        self.input_refused = 0
        """RFB input messages dropped because the viewer did not hold control."""
        self.protocol_errors = 0
        """Connections closed for a client message the filter does not accept."""

    @property
    def count(self) -> int:
        return len(self._sockets)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.headers.get("X-VR-Token-Kind", "view")
        token_id = request.headers.get("X-VR-Token-Id", "")
        if kind not in ("view", "control", "api"):
            return web.json_response({"error": "bad_token_kind",
                                      "detail": f"unknown token kind {kind!r}"}, status=400)
        try:
            server = self._view_server if kind == "view" else self._server
            path = await server.ensure_started()
            reader, writer = await asyncio.open_unix_connection(str(path))
        except (VncError, OSError) as e:
            logger.warning("session %s: VNC unavailable: %s", self._session_id, e)
            return web.json_response({"error": "vnc_unavailable", "detail": str(e)}, status=503)
        ws = web.WebSocketResponse(protocols=("binary",), compress=False, heartbeat=20,
                                   max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        self._sockets.add(ws)
        rfb_filter = RfbInputFilter(lambda: self._inputs.may_inject(kind, token_id))  # type: ignore[arg-type]
        logger.info("session %s: VNC viewer joined (%s token)", self._session_id, kind)

        async def downstream() -> None:
            while data := await reader.read(256 * 1024):
                await ws.send_bytes(data)
            await ws.close()

        pump = asyncio.create_task(downstream())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                out = rfb_filter.feed(msg.data)
                if out:
                    writer.write(out)
                    await writer.drain()
        except RfbProtocolError as e:
            self.protocol_errors += 1
            logger.warning("session %s: VNC viewer closed: %s", self._session_id, e)
        except (ConnectionResetError, BrokenPipeError) as e:
            logger.debug("session %s: VNC connection ended: %s", self._session_id, e)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionResetError, BrokenPipeError):
                pass
            self._sockets.discard(ws)
            self.input_refused += rfb_filter.dropped
            await ws.close()
            logger.info("session %s: VNC viewer left (%d input messages refused)",
                        self._session_id, rfb_filter.dropped)
        return ws

    async def aclose(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"agent stopping")
        await self._server.aclose()
        await self._view_server.aclose()
