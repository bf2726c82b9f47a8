"""The x11vnc baseline of the cost benchmarks: an x11vnc launcher and a minimal RFB client.

:class:`X11vnc` runs x11vnc on a display, listening only on a unix socket
(``-unixsock``, ``-rfbport 0``: no TCP port), either *tuned* (``-defer 5
-wait 5 -nowait_bog``, the settings of the project's noVNC fallback) or
*default* (``-shared -forever -ncache 0`` only, as in MEASUREMENTS.md).

:class:`RfbClient` is a viewer as demanding as noVNC: RFB 3.8, security type
None, 32-bit true colour, and a new incremental ``FramebufferUpdateRequest``
as soon as each update has been read (noVNC's loop). It asks for ZRLE and
CopyRect (noVNC would ask for Tight first; ZRLE is x11vnc's other zlib-based
encoding, of the same kind of cost), reads every rectangle to stay in step,
counts bytes and updates, and does not decode pixels (a real viewer would do
that on its own machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RfbClient", "RfbError", "X11vnc", "X11VNC_DEFAULT", "X11VNC_TUNED"]

X11VNC_DEFAULT = ("-shared", "-forever", "-ncache", "0")
X11VNC_TUNED = (*X11VNC_DEFAULT, "-defer", "5", "-wait", "5", "-nowait_bog")
_QUIET = ("-nopw", "-norc", "-noipv6", "-nolookup", "-noremote", "-nocmds", "-quiet",
          "-rfbport", "0")

ENC_RAW, ENC_COPYRECT, ENC_ZLIB, ENC_ZRLE = 0, 1, 6, 16


class RfbError(RuntimeError):
    """The VNC server said something this client does not handle."""


class X11vnc:
    """One x11vnc process on *display*; ``-noshm`` when the X server is in another
    IPC namespace (a pod's Xvfb refuses ``XShmAttach`` from outside)."""

    def __init__(self, display: str, *, tuned: bool, noshm: bool) -> None:
        self.display = display
        self.tuned = tuned
        self.noshm = noshm
        self.tmp = Path(tempfile.mkdtemp(prefix="vr-bench-x11vnc-"))
        self.socket_path = self.tmp / "vnc.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        return "x11vnc (tuned)" if self.tuned else "x11vnc (default)"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 15.0) -> None:
        exe = shutil.which("x11vnc")
        if exe is None:
            raise RuntimeError("x11vnc is not installed (apt-get install x11vnc)")
        argv = [exe, "-display", self.display, "-unixsock", str(self.socket_path),
                *(X11VNC_TUNED if self.tuned else X11VNC_DEFAULT), *_QUIET]
        if self.noshm:
            argv.append("-noshm")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     env={**os.environ, "DISPLAY": self.display})
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"x11vnc exited with {self.proc.returncode} on {self.display}")
            if self.socket_path.exists():
                try:
                    _, writer = await asyncio.open_unix_connection(str(self.socket_path))
                except OSError:
                    pass
                else:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("x11vnc did not listen in time")
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        shutil.rmtree(self.tmp, ignore_errors=True)


class RfbClient:
    """A continuously updating RFB viewer over a unix socket."""

    def __init__(self) -> None:
        self.bytes = 0
        self.updates = 0
        self.width = self.height = 0
        self.first_update = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def connect(self, socket_path: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        await self.start(reader, writer)

    async def start(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handshake on an open connection, then keep asking for updates."""
        self._reader, self._writer = reader, writer
        version = await self._read(12)
        if not version.startswith(b"RFB 003."):
            raise RfbError(f"not an RFB server: {version!r}")
        writer.write(b"RFB 003.008\n")
        count = (await self._read(1))[0]
        if count == 0:
            length = struct.unpack(">I", await self._read(4))[0]
            raise RfbError(f"refused: {(await self._read(length))!r}")
        types = await self._read(count)
        if 1 not in types:
            raise RfbError(f"no security type None offered: {list(types)}")
        writer.write(b"\x01")
        if struct.unpack(">I", await self._read(4))[0] != 0:
            raise RfbError("security handshake failed")
        writer.write(b"\x01")  # shared
        self.width, self.height = struct.unpack(">HH", await self._read(4))
        await self._read(16)  # server pixel format
        name_len = struct.unpack(">I", await self._read(4))[0]
        await self._read(name_len)
        # 32 bpp, depth 24, little endian, true colour, 8 bits per channel
        writer.write(struct.pack(">BxxxBBBBHHHBBBxxx", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
        encodings = (ENC_ZRLE, ENC_COPYRECT, ENC_RAW)
        writer.write(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        self._request(incremental=False)
        await writer.drain()
        self._task = asyncio.create_task(self._pump())

    async def _read(self, n: int) -> bytes:
        assert self._reader is not None
        data = await self._reader.readexactly(n)
        self.bytes += n
        return data

    async def _skip(self, n: int) -> None:
        assert self._reader is not None
        while n > 0:
            chunk = await self._reader.read(min(n, 1 << 20))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", n)
            self.bytes += len(chunk)
            n -= len(chunk)

    def _request(self, incremental: bool) -> None:
        assert self._writer is not None
        self._writer.write(struct.pack(">BBHHHH", 3, int(incremental), 0, 0,
                                       self.width, self.height))

    async def _pump(self) -> None:
        try:
            while True:
                kind = (await self._read(1))[0]
                if kind == 0:
                    await self._update()
                    self.updates += 1
                    self.first_update.set()
                    self._request(incremental=True)
                    assert self._writer is not None
                    await self._writer.drain()
                elif kind == 1:
                    _, _, n = struct.unpack(">BHH", await self._read(5))
                    await self._skip(6 * n)
                elif kind == 2:
                    pass
                elif kind == 3:
                    length = struct.unpack(">xxxI", await self._read(7))[0]
                    await self._skip(length)
                else:
                    raise RfbError(f"unknown server message {kind}")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except RfbError as e:
            self.error = e

    async def _update(self) -> None:
        rects = struct.unpack(">xH", await self._read(3))[0]
        for _ in range(rects):
            _, _, w, h, enc = struct.unpack(">HHHHi", await self._read(12))
            if enc == ENC_RAW:
                await self._skip(w * h * 4)
            elif enc == ENC_COPYRECT:
                await self._skip(4)
            elif enc in (ENC_ZRLE, ENC_ZLIB):
                length = struct.unpack(">I", await self._read(4))[0]
                await self._skip(length)
            elif enc == -224:  # LastRect
                return
            elif enc == -223:  # DesktopSize
                self.width, self.height = w, h
            else:
                raise RfbError(f"unexpected encoding {enc}")

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
