"""A pooled runtime agent: warm (imports done, desktop up), waiting to be claimed.

With ``--pooled`` the agent serves only two routes on its socket until the gateway
claims the pod for a session:

* ``GET /health``: ``{"pooled": true, "ready": bool, "first_frame": false}`` --
  ``ready`` once the display answers and (with ``--cdp-socket``) Chromium has a page;
* ``POST /claim`` (:data:`wire.agent_api.CLAIM`): ``{"resolution": "WxH",
  "start_url": str | null, "recording": bool}``. The screen is resized by RandR,
  Chromium's window is fitted to it and the start URL is loaded (its history
  cleared, so the session begins with that page), then the answer is sent and the
  agent builds its full pipeline for the claimed settings (``__main__.serve``), the
  same way a cold agent does: capture, recording and viewers all begin at claim.

Nothing is captured, encoded or recorded while pooled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from wire import agent_api

from .cdp_link import BrowserLink
from .errors import AgentSideError
from .screen import ScreenError, open_display, resize_screen

__all__ = ["Claim", "fit_browser", "wait_for_claim", "wait_for_display"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What the gateway asked for when it claimed the pod."""

    width: int
    height: int
    start_url: str | None
    recording: bool
    spans: dict[str, float]
    """Milliseconds spent on each claim step (``resize``, ``browser``)."""


def parse_claim(body: Any, max_width: int, max_height: int) -> tuple[int, int, str | None, bool]:
    """Validate a claim body; ValueError with a safe message when it is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the claim body must be a JSON object")
    try:
        width, height = (int(v) for v in str(body.get("resolution", "")).lower().split("x"))
    except ValueError as e:
        raise ValueError(f"resolution must be WxH, not {body.get('resolution')!r}") from e
    if width % 2 or height % 2 or not (0 < width <= max_width and 0 < height <= max_height):
        raise ValueError(f"resolution {width}x{height} does not fit this pod "
                         f"({max_width}x{max_height})")
    url = body.get("start_url")
    if url is not None and not isinstance(url, str):
        raise ValueError("start_url must be a string or null")
    return width, height, url, bool(body.get("recording", False))


async def wait_for_display(display: str, timeout: float = 15.0) -> float:  # noqa: ASYNC109
    """Wait for the X socket of *display* (started beside us); seconds waited."""
    sock = Path(f"/tmp/.X11-unix/X{display.lstrip(':').split('.')[0]}")
    t0 = time.monotonic()
    while not sock.exists():
        if time.monotonic() - t0 > timeout:
            raise AgentSideError(f"the X server of {display} did not start within {timeout:g} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def _page_target(link: BrowserLink) -> str | None:
    targets = (await link.call("Target.getTargets")).get("targetInfos", [])
    for t in targets:
        if isinstance(t, dict) and t.get("type") == "page":
            return str(t.get("targetId"))
    return None


async def fit_browser(cdp_socket: Path, width: int, height: int, start_url: str | None,
                      session_id: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Fit Chromium's window to the screen and load *start_url* in its page."""
    link = BrowserLink(cdp_socket, session_id)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                await link.connect()
                target = await _page_target(link)
                if target is not None:
                    break
            except AgentSideError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AgentSideError("Chromium has no page")
            await asyncio.sleep(0.05)
        window = await link.call("Browser.getWindowForTarget", {"targetId": target})
        await link.call("Browser.setWindowBounds", {
            "windowId": window["windowId"],
            "bounds": {"left": 0, "top": 0, "width": width, "height": height}})
        if start_url:
            # A new tab with the URL replaces the blank one: its history starts there,
            # as a cold session's does.
            await link.call("Target.createTarget", {"url": start_url})
            await link.call("Target.closeTarget", {"targetId": target})
    finally:
        await link.aclose()


def warm_up(display: str, width: int, height: int) -> None:
    """Pay the first-use costs a cold agent pays after its display is up (loading the
    capture and x264 libraries, the first XShm set-up: ~0.15 s measured) now, while
    pooled. Blocking: run in a thread."""
    import av
    import numpy as np

    from .capture import ScreenCapture

    capture = ScreenCapture(display, width, height, use_damage=True)
    capture.open()
    capture.close()
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 64, 64, "yuv420p"
    codec.options = {"preset": "ultrafast", "tune": "zerolatency"}
    frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), dtype=np.uint8), format="rgb24")
    for packet in codec.encode(frame.reformat(format="yuv420p")):
        del packet


async def _browser_ready(cdp_socket: Path, session_id: str) -> bool:
    link = BrowserLink(cdp_socket, session_id)
    try:
        await link.connect()
        return await _page_target(link) is not None
    except AgentSideError:
        return False
    finally:
        await link.aclose()


async def wait_for_claim(socket: Path, display: str, max_width: int, max_height: int,
                         cdp_socket: Path | None, session_id: str) -> Claim:
    """Serve the pooled routes on *socket* until a claim has been applied."""
    claimed: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()
    ready = False

    warmed = False
    conn = None

    async def health(request: web.Request) -> web.Response:
        nonlocal ready, warmed, conn
        if not warmed:
            await asyncio.to_thread(warm_up, display, max_width, max_height)
            conn = await asyncio.to_thread(open_display, display)
            warmed = True
        if not ready:
            ready = cdp_socket is None or await _browser_ready(cdp_socket, session_id)
        return web.json_response({"ok": False, "pooled": True, "ready": ready,
                                  "first_frame": False})

    async def claim(request: web.Request) -> web.Response:
        if claimed.done():
            return web.json_response({"error": "claimed", "detail": "already claimed"},
                                     status=409)
        try:
            width, height, url, recording = parse_claim(await request.json(),
                                                        max_width, max_height)
        except ValueError as e:
            return web.json_response({"error": "bad_claim", "detail": str(e)}, status=400)
        spans: dict[str, float] = {}
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(resize_screen, display, width, height, conn)
            spans["resize"] = (time.monotonic() - t0) * 1000
            if cdp_socket is not None:
                t1 = time.monotonic()
                await fit_browser(cdp_socket, width, height, url, session_id)
                spans["browser"] = (time.monotonic() - t1) * 1000
        except (ScreenError, AgentSideError) as e:
            logger.warning("session %s: claim failed: %s", session_id, e)
            return web.json_response({"error": "claim_failed", "detail": str(e)}, status=500)
        if not claimed.done():
            claimed.set_result(Claim(width, height, url, recording, spans))
        logger.info("session %s: claimed at %dx%d (%s)", session_id, width, height,
                    ", ".join(f"{k} {v:.0f} ms" for k, v in spans.items()))
        return web.json_response({"claimed": True, "spans": spans})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get(agent_api.HEALTH, health)
    app.router.add_post(agent_api.CLAIM, claim)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    socket.unlink(missing_ok=True)
    site = web.UnixSite(runner, str(socket))
    await site.start()
    socket.chmod(0o600)
    logger.info("session %s: pooled runtime agent waiting on %s (up to %dx%d)", session_id,
                socket, max_width, max_height)
    try:
        return await claimed
    finally:
        await runner.cleanup()
        if conn is not None:
            conn.close()
