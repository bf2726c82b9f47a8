"""Helpers shared by the action, control, event and client tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gateway_fixtures import Gateway

XTERM_POINT = [300, 200]
"""Inside the xterm of a session (``-geometry 100x30+40+40``): without a window
manager, keyboard focus follows the pointer, so the pointer must rest here."""


async def act(gw: Gateway, sid: str, token: str | None = None,
              **body: Any) -> tuple[int, dict[str, Any]]:
    """POST one action; returns (status, JSON body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else gw.auth
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"), json=body,
                            headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def act_ok(gw: Gateway, sid: str, **body: Any) -> dict[str, Any]:
    status, data = await act(gw, sid, **body)
    assert status == 200, (body, data)
    assert data["ok"] is True
    return data


async def control(gw: Gateway, sid: str, action: str,
                  token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else gw.auth
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                            json={"action": action}, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def downloads(gw: Gateway, sid: str) -> Path:
    """The session's shared folder on the host (``~/Downloads`` inside)."""
    return gw.state_dir / "sessions" / sid / "home" / "Downloads"


async def poll(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Call *check* until it returns something truthy; fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


async def shell(gw: Gateway, sid: str, command: str) -> None:
    """Type *command* + Return into the session's xterm (pointer first, for focus)."""
    await act_ok(gw, sid, action="mouse_move", coordinate=XTERM_POINT)
    await act_ok(gw, sid, action="type", text=command)
    await act_ok(gw, sid, action="key", text="Return")


async def wait_shell_ready(gw: Gateway, sid: str, timeout: float = 20.0) -> None:
    """Wait until bash in the xterm runs commands (it starts after the session is running)."""
    marker = downloads(gw, sid) / ".ready"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        await shell(gw, sid, "touch ~/Downloads/.ready")
        try:
            await poll(marker.exists, timeout=2.0, what="the shell")
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    marker.unlink()


def png_rgb(png: bytes) -> Any:
    """Decode a PNG into an ``(h, w, 3)`` uint8 array (PyAV's png decoder)."""
    import av

    ctx = av.CodecContext.create("png", "r")
    frames = ctx.decode(av.Packet(png))
    assert frames, "the PNG did not decode"
    return frames[0].to_ndarray(format="rgb24")


async def screenshot(gw: Gateway, sid: str) -> Any:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200
        return png_rgb(await resp.read())
