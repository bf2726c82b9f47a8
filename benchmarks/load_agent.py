"""The load benchmark's agent: a mix of computer-use actions through the API.

:func:`agent_loop` drives one session at 2-5 actions/s, :func:`follow_events`
follows its SSE stream, and :func:`open_page` puts the counter page (which
redraws on every input) in the session's Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import av

from benchmarks.load_report import ErrorRecord, SessionRun
from visual_runtime_client.client import (
    ApiError,
    ClientError,
    RemoteSession,
    SessionNotRunning,
)

logger = logging.getLogger(__name__)


T = TypeVar("T")

# Counts every input event on a fixed line, so every action is a new frame. Short, because
# Chromium's address bar autocompletes after every typed key (slow on a busy machine).
PAGE_URL = ("data:text/html,<body%20style=background:navy;color:white;height:9999px;"
            "font-size:40px><p%20id=b%20style=position:fixed>0</p><script>n=0;"
            "onmousemove=onmousedown=onkeydown=onscroll=e=>b.innerText=++n+e.type+scrollY"
            "</script>")



# ------------------------------------------------------------- the agent
def resolution_of(session: RemoteSession) -> tuple[int, int]:
    """The session's (width, height) from its info."""
    w, h = str(session.info.get("resolution", "1600x900")).split("x")
    return int(w), int(h)


def next_action(rng: random.Random, width: int, height: int) -> dict[str, Any]:
    """One action of the mix; coordinates stay on the page (below Chromium's toolbar)."""
    x, y = rng.randrange(40, width - 40), rng.randrange(160, height - 40)
    roll = rng.random()
    if roll < 0.30:
        return {"action": "mouse_move", "coordinate": [x, y]}
    if roll < 0.45:
        return {"action": "left_click", "coordinate": [x, y]}
    if roll < 0.62:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
        return {"action": "type", "text": word + " "}
    if roll < 0.75:
        return {"action": "key", "text": rng.choice(["a", "shift+b", "BackSpace", "space",
                                                    "Down", "Up", "Return", "shift+space"])}
    if roll < 0.88:
        return {"action": "scroll", "coordinate": [x, y],
                "scroll_direction": rng.choice(["up", "down"]),
                "scroll_amount": rng.randint(1, 5)}
    return {"action": "screenshot"}


class Recorder:
    """Collects every failed call (non-2xx or transport) with its time and status."""

    def __init__(self) -> None:
        self.errors: list[ErrorRecord] = []
        self.t0 = time.monotonic()
        self.screens: dict[str, bytes] = {}
        """The last screenshot of a session whose page did not open (for the logs)."""

    def add(self, sid: str, what: str, e: BaseException) -> None:
        status = e.status if isinstance(e, ApiError) else None
        detail = e.detail if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
        self.errors.append(ErrorRecord(round(time.monotonic() - self.t0, 3), sid, what,
                                       status, detail[:300]))
        logger.warning("session %s: %s failed: %s %s", sid, what, status, detail[:200])

    async def call(self, sid: str, what: str, coro: Awaitable[T]) -> T | None:
        try:
            return await coro
        except (ClientError, aiohttp.ClientError, TimeoutError) as e:
            self.add(sid, what, e)
            return None


async def agent_loop(session: RemoteSession, run: SessionRun, rec: Recorder,
                     rng: random.Random, width: int, height: int, until: float,
                     interval: tuple[float, float]) -> None:
    """Act until *until* (monotonic); one action at a time, like a computer-use agent."""
    while time.monotonic() < until:
        action = next_action(rng, width, height)
        name = action.pop("action")
        started = time.monotonic()
        try:
            result = await session.act(name, **action)
        except SessionNotRunning as e:
            run.actions_failed += 1
            rec.add(run.session_id, f"action:{name}", e)
            return  # the session ended under the agent: nothing more to drive
        except (ClientError, aiohttp.ClientError, TimeoutError) as e:
            run.actions_failed += 1
            rec.add(run.session_id, f"action:{name}", e)
        else:
            elapsed = (time.monotonic() - started) * 1000
            if name == "screenshot" and not base64.b64decode(
                    result.get("base64_image", ""))[:8] == b"\x89PNG\r\n\x1a\n":
                run.actions_failed += 1
                rec.errors.append(ErrorRecord(round(time.monotonic() - rec.t0, 3),
                                              run.session_id, "action:screenshot", 200,
                                              "the answer holds no PNG"))
            else:
                run.actions_ok += 1
                run.latencies_ms.append(round(elapsed, 2))
                run.by_action[name] = run.by_action.get(name, 0) + 1
        wake = min(until, started + rng.uniform(*interval))
        delay = wake - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def follow_events(session: RemoteSession, run: SessionRun, rec: Recorder) -> None:
    try:
        async with contextlib.aclosing(session.events()) as stream:
            async for event in stream:
                run.events[event.type] = run.events.get(event.type, 0) + 1
    except ClientError as e:
        rec.add(run.session_id, "events", e)


def _pixel(png: bytes, fx: float, fy: float) -> tuple[int, int, int]:
    """The RGB colour at (fx, fy) (fractions of the width/height) of a PNG."""
    with av.open(io.BytesIO(png), mode="r") as container:
        frame = next(container.decode(video=0))
    rgb = frame.to_ndarray(format="rgb24")
    h, w = rgb.shape[:2]
    r, g, b = (int(v) for v in rgb[min(h - 1, int(h * fy)), min(w - 1, int(w * fx))])
    return r, g, b


def page_shown(png: bytes) -> bool:
    """Whether the screen shows the counter page (navy, low on the screen)."""
    r, g, b = _pixel(png, 0.5, 0.9)
    return r <= 0x10 and g <= 0x10 and 0x70 <= b <= 0x90


def chromium_shown(png: bytes) -> bool:
    """Whether Chromium's window is up (its light tab strip at the top; X's root is black)."""
    return min(_pixel(png, 0.5, 0.01)) >= 0x80


async def open_page(session: RemoteSession, rec: Recorder, within: float = 120.0,
                    url: str = PAGE_URL) -> bool:
    """Open the counter page (or another navy page, *url*): type its data: URL into
    Chromium's address bar.

    A session is ``running`` once its display serves frames, which is before
    Chromium's window is up; on a busy machine Chromium also takes seconds to
    handle typed keys. So: wait for the window, type the URL, and wait for the
    page (typing it again only after a long while). Failing calls are recorded;
    False when the page never showed.
    """
    sid = session.session_id
    width, height = resolution_of(session)
    # Clicks raise and focus Chromium (full screen) below and right of the xterm
    # (100x30 at +40+40), which may be mapped above it.
    spot = (width * 4 // 5, height * 17 // 20)
    deadline = time.monotonic() + within

    async def shows(check: Callable[[bytes], bool], until: float) -> bool:
        while time.monotonic() < until:
            png = await rec.call(sid, "screenshot", session.view_screenshot())
            if png is not None:
                rec.screens[sid] = png
                if await asyncio.to_thread(check, png):
                    return True
            await asyncio.sleep(0.5)
        return False

    if await shows(chromium_shown, deadline):
        while time.monotonic() < deadline:
            await rec.call(sid, "action:left_click", session.click(*spot))
            await rec.call(sid, "action:key", session.key("ctrl+l"))
            await asyncio.sleep(0.3)
            await rec.call(sid, "action:type", session.type_text(url + "\n"))
            if await shows(page_shown, min(deadline, time.monotonic() + 40)):
                # focus the page, not the address bar: typed words must not navigate
                await rec.call(sid, "action:left_click", session.click(*spot))
                return True
    rec.errors.append(ErrorRecord(round(time.monotonic() - rec.t0, 3), sid, "open-page",
                                  None, f"the counter page did not show within {within} s"))
    return False
