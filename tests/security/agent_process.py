"""A real runtime agent process on a real Xvfb, and viewers that talk to it directly.

The viewer-cap tests attack the runtime agent the way a view-token holder
would through the gateway (which only authenticates and proxies): WHEP
offers from real aiortc peers, WebSocket viewers, data channels. Talking to
the agent's unix socket directly lets them read its memory (``/proc``) and
``/stats`` while they do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from Xlib import display as xdisplay

TOKEN_KIND = "X-VR-Token-Kind"
TOKEN_ID = "X-VR-Token-Id"


@dataclass
class AgentProcess:
    """``python -m agent_side`` serving one session on *socket*."""

    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket)),
                                     timeout=aiohttp.ClientTimeout(total=30))

    def status(self, field_name: str) -> int:
        """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field_name} in /proc/{self.proc.pid}/status")

    def fds(self) -> int:
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    async def stats(self) -> dict[str, Any]:
        async with self.http() as http, http.get("http://agent/stats") as resp:
            assert resp.status == 200
            data: dict[str, Any] = await resp.json()
            return data


async def start_agent(display: str, size: tuple[int, int], folder: Path,
                      *args: str) -> AgentProcess:
    sock = folder / "agent.sock"
    log = folder / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent_side", "--socket", str(sock), "--display", display,
             "--resolution", f"{size[0]}x{size[1]}", "--session-id", "caps", *args],
            stdout=out, stderr=subprocess.STDOUT)
    agent = AgentProcess(proc, sock, log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"runtime agent exited: {log.read_text()[-2000:]}")
        if sock.exists():
            try:
                async with agent.http() as http, http.get("http://agent/health") as resp:
                    if resp.status == 200 and (await resp.json())["first_frame"]:
                        return agent
            except aiohttp.ClientError:
                pass
        if time.monotonic() > deadline:
            stop_agent(agent)
            raise AssertionError("runtime agent did not come up within 30 s")
        await asyncio.sleep(0.1)


def stop_agent(agent: AgentProcess) -> None:
    agent.proc.terminate()
    try:
        agent.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.proc.kill()
        agent.proc.wait()


class Painter:
    """Keeps the screen changing (python-xlib fills), so the encoder has frames to send."""

    def __init__(self, display: str) -> None:
        self.display = xdisplay.Display(display)
        self.root = self.display.screen().root
        self._task: asyncio.Task[None] | None = None
        self.n = 0

    async def _run(self) -> None:
        while True:
            self.n += 1
            gc = self.root.create_gc(foreground=(self.n * 0x3F1F7) & 0xFFFFFF)
            self.root.fill_rectangle(gc, (self.n * 23) % 500, (self.n * 7) % 400, 60, 40)
            gc.free()
            self.display.sync()
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.display.close()


@dataclass
class DirectViewer:
    """A real aiortc WHEP viewer of the agent (recvonly video, optionally the input channel)."""

    agent: AgentProcess
    token_id: str
    kind: str = "view"
    with_channel: bool = False
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    channel: RTCDataChannel | None = None
    frames: int = 0
    status: int = 0
    answer: str = ""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    channel_open: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> int:
        self.pc.addTransceiver("video", direction="recvonly")
        if self.with_channel:
            self.channel = self.pc.createDataChannel("input")
            self.channel.on("open", self.channel_open.set)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with self.agent.http() as http, http.post(
                "http://agent/whep", data=self.pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp", TOKEN_KIND: self.kind,
                         TOKEN_ID: self.token_id}) as resp:
            self.status = resp.status
            self.answer = await resp.text()
        if self.status == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(self.answer, "answer"))
        return self.status

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.frames += 1

    async def wait_more_frames(self, count: int, within: float = 30.0) -> None:
        """Wait until *count* more frames than now were decoded."""
        target = self.frames + count
        await wait_until(lambda: self.frames >= target, within,
                         f"{count} more frames for viewer {self.token_id}")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()


async def wait_until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_stats(agent: AgentProcess, cond: Callable[[dict[str, Any]], bool],
                     within: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        stats = await agent.stats()
        if cond(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}: "
                                 f"{stats.get('limits')}, {stats.get('viewers_by_transport')}")
        await asyncio.sleep(0.2)
