"""Posting dialect bodies to a live gateway and reading the session's X server."""

from __future__ import annotations

import base64
from typing import Any

from Xlib import X
from Xlib import display as xdisplay

from gateway.appkeys import CONFIG
from tests.actions.helpers import png_rgb
from tests.gateway_fixtures import Gateway
from tests.webrtc.xsession import open_session_display, x_socket_of


async def post(gw: Gateway, sid: str, body: Any, dialect: str = "",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST *body* to ``.../actions`` (``dialect="openai"``: ``.../actions/openai``)."""
    path = f"/api/visual-sessions/{sid}/actions" + (f"/{dialect}" if dialect else "")
    async with gw.http.post(gw.url(path), json=body, headers=headers or gw.auth) as resp:
        return resp.status, await resp.json(content_type=None)


async def post_ok(gw: Gateway, sid: str, body: Any, dialect: str = "") -> dict[str, Any]:
    status, data = await post(gw, sid, body, dialect)
    assert status == 200, (body, data)
    assert data["ok"] is True
    return data


def session_display(gw: Gateway, sid: str) -> xdisplay.Display:
    """A python-xlib connection to the session's own X server (the real screen)."""
    return open_session_display(x_socket_of(gw.extra["app"][CONFIG].runtime_dir, sid))


def pointer(disp: xdisplay.Display) -> tuple[int, int]:
    reply = disp.screen().root.query_pointer()
    return int(reply.root_x), int(reply.root_y)


def buttons_down(disp: xdisplay.Display) -> int:
    return int(disp.screen().root.query_pointer().mask) & (
        X.Button1Mask | X.Button2Mask | X.Button3Mask)


def image_of(result: dict[str, Any]) -> Any:
    """The ``base64_image`` of an action result, decoded to an (h, w, 3) array."""
    return png_rgb(base64.b64decode(result["base64_image"]))
