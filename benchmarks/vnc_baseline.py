"""The baseline of the viewer benchmarks: x11vnc + noVNC on the same display.

:class:`VncBaseline` starts an x11vnc (tuned or default) on the session's X server
and a one-hop WebSocket bridge to it (as websockify would), so the real noVNC page
in the same Chromium measures it side by side with our transports.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiohttp import web

X11VNC_COMMON = ("-shared", "-forever", "-ncache", "0", "-nopw", "-norc", "-noipv6",
                 "-nolookup", "-noremote", "-nocmds", "-quiet", "-noshm", "-rfbport", "0")
"""x11vnc as the session's own fallback runs it, minus the tuning (``-noshm``: the
sandboxed Xvfb refuses a foreign uid's shared memory, see ``agent_side/vnc.py``)."""
X11VNC_TUNING = ("-defer", "5", "-wait", "5", "-nowait_bog")



class VncBaseline:
    """An x11vnc on the session's display (tuned or default settings) and a one-hop
    WebSocket bridge to it on 127.0.0.1, as websockify would serve noVNC."""

    def __init__(self, display: str, workdir: Path) -> None:
        self.display, self.workdir = display, workdir
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/rfb/{mode}", self._bridge)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def url(self, mode: str) -> str:
        return f"ws://127.0.0.1:{self.port}/rfb/{mode}"

    async def x11vnc(self, mode: str) -> int:
        """Starts (once) the x11vnc of *mode* (``tuned`` or ``default``); returns its pid."""
        if mode in self.procs:
            return self.procs[mode].pid
        sock = self.workdir / f"x11vnc-{mode}.sock"
        args = [*X11VNC_COMMON, *(X11VNC_TUNING if mode == "tuned" else ())]
        proc = await asyncio.create_subprocess_exec(
            "x11vnc", "-display", self.display, "-unixsock", str(sock), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        self.procs[mode] = proc
        deadline = time.monotonic() + 15
        while not sock.exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"x11vnc ({mode}) did not start on {self.display}")
            await asyncio.sleep(0.05)
        return proc.pid

    async def _bridge(self, request: web.Request) -> web.WebSocketResponse:
        mode = request.match_info["mode"]
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=0)
        await ws.prepare(request)
        reader, writer = await asyncio.open_unix_connection(
            str(self.workdir / f"x11vnc-{mode}.sock"))

        async def upstream() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    writer.write(msg.data)
                    await writer.drain()

        async def downstream() -> None:
            while data := await reader.read(1 << 16):
                await ws.send_bytes(data)

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            await ws.close()
        return ws

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        self.procs.clear()
