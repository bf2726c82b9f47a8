"""A scripted agent that drives a session through the public API, for ``visual-runtime demo``.

It shows the product at work without an LLM: it opens pages in Chromium
(typed into the address bar; sessions have no internet, so the pages are
``data:`` URLs and ``chrome://version``), switches to the terminal and runs
commands, clicks and scrolls, in a loop until cancelled. When a human takes
control it pauses (it follows the ``control`` events, and a 409 from an
action means the same) and, after the release, resumes from a fresh
screenshot at the start of the current scene.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from visual_runtime_client.client import HumanInControl, RemoteSession, SessionNotRunning, VisualRuntimeClient

__all__ = ["DemoAgent", "drive"]

logger = logging.getLogger(__name__)

Step = Callable[[RemoteSession], Awaitable[object]]

_PAGE = """<!doctype html><meta charset=utf-8><title>Visual Runtime demo</title>
<body style="font:28px sans-serif;background:#0f172a;color:#e2e8f0;padding:40px">
<h1 style="color:#38bdf8">Hello from the demo agent</h1>
<p>This page was typed into Chromium's address bar through
<code>POST /api/visual-sessions/{id}/actions</code>.</p>
<p>Take control in the viewer at any time: the agent pauses and resumes after you release.</p>
<p id=c>Clicks: 0</p>
<script>let n=0;addEventListener('click',e=>{n++;document.getElementById('c').textContent=
'Clicks: '+n+' (last at '+e.screenX+', '+e.screenY+')'});</script>
<div style="height:1500px"></div><p>The end of a long page.</p>"""


@dataclass(frozen=True)
class Scene:
    """A named sequence of steps; after a hand-over the scene restarts from its first step."""

    name: str
    steps: tuple[Step, ...]


def _pause(seconds: float) -> Step:
    async def step(_: RemoteSession) -> None:
        await asyncio.sleep(seconds)
    return step


def _open(url: str) -> tuple[Step, ...]:
    return (
        lambda s: s.key("ctrl+l"),
        _pause(0.3),
        lambda s: s.type_text(url + "\n"),
        _pause(2.0),
    )


def scenes(width: int, height: int) -> list[Scene]:
    """The demo script for a ``width`` x ``height`` screen."""
    cx, cy = width // 2, height // 2
    page = "data:text/html;charset=utf-8," + quote(_PAGE)
    return [
        Scene("browser", (
            lambda s: s.click(cx, cy),
            *_open(page),
            lambda s: s.click(cx, cy + 60),
            _pause(0.7),
            lambda s: s.click(cx + 120, cy + 100),
            _pause(0.7),
            lambda s: s.scroll(cx, cy, "down", 10),
            _pause(1.0),
            lambda s: s.scroll(cx, cy, "up", 10),
            _pause(1.0),
        )),
        Scene("terminal", (
            # Chromium fills the screen; the window manager's alt+tab raises the xterm.
            lambda s: s.key("alt+Tab"),
            _pause(0.8),
            # Focus by clicking into the raised xterm (alt+tab's focus change can lag
            # on a busy machine), and clear any half-typed line from an earlier round.
            lambda s: s.click(min(300, width - 1), min(200, height - 1)),
            lambda s: s.key("ctrl+c"),
            _pause(0.3),
            lambda s: s.type_text("echo 'Hello from the Visual Runtime demo agent ✓'\n"),
            _pause(1.0),
            lambda s: s.type_text("uname -a; date\n"),
            _pause(1.0),
            lambda s: s.type_text("ls -la ~ && df -h ~ | tail -1\n"),
            _pause(1.5),
            lambda s: s.type_text("seq 1 5 | paste -sd+ | bc\n"),
            _pause(1.5),
            lambda s: s.key("alt+Tab"),
            _pause(0.8),
        )),
        Scene("version", (
            lambda s: s.click(cx, cy),
            *_open("chrome://version"),
            lambda s: s.scroll(cx, cy, "down", 5),
            _pause(1.5),
        )),
    ]


class DemoAgent:
    """Runs :func:`scenes` on a session until cancelled or the session ends."""

    def __init__(self, session: RemoteSession, width: int, height: int,
                 *, say: Callable[[str], None] = print) -> None:
        self.session = session
        self._scenes = scenes(width, height)
        self._say = say
        self._human = asyncio.Event()
        self.steps_done = 0
        self.handovers = 0

    async def run(self) -> None:
        """Loop over the scenes; returns when the session ends."""
        watcher = asyncio.create_task(self._watch_control())
        try:
            while True:
                for scene in self._scenes:
                    await self._play(scene)
        except SessionNotRunning:
            self._say("demo agent: the session ended")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _play(self, scene: Scene) -> None:
        logger.info("session %s: demo scene %s", self.session.session_id, scene.name)
        while True:
            try:
                for step in scene.steps:
                    if self._human.is_set():
                        raise HumanInControl(409, {"type": "human-in-control"})
                    await step(self.session)
                    self.steps_done += 1
                return
            except HumanInControl:
                await self._hand_over()

    async def _hand_over(self) -> None:
        self.handovers += 1
        self._say("demo agent: a human took control; pausing")
        state = await self.session.wait_for_control("agent")
        self._human.clear()
        png = await self.session.screenshot()  # resume from what is on screen now
        self._say(f"demo agent: control is back (since {state.since}); resuming from a "
                  f"fresh {len(png)}-byte screenshot")

    async def _watch_control(self) -> None:
        """Pause at once on a take, not only at the next refused action."""
        with contextlib.suppress(SessionNotRunning):
            async for event in self.session.events():
                if event.type == "control" and event.data.get("controller") == "human":
                    self._human.set()
                elif event.type == "control":
                    self._human.clear()


async def drive(base_url: str, token: str, session_id: str,
                *, say: Callable[[str], None] = print) -> None:
    """Run the demo agent on *session_id* of the gateway at *base_url* until cancelled."""
    async with VisualRuntimeClient(base_url, token) as client:
        session = await client.get_session(session_id, wait=True)
        width, height = (int(v) for v in str(session.info["resolution"]).split("x"))
        say(f"demo agent: driving session {session_id} ({width}x{height})")
        await DemoAgent(session, width, height, say=say).run()
