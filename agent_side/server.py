"""The runtime agent's HTTP API on its unix socket (spoken only by the gateway).

The gateway authenticates every caller and passes who they are in headers
(``X-VR-Token-Kind``: view | control | api, ``X-VR-Token-Id``: a stable hash
of the token). Errors are ``{"error": code, "detail": ...}`` with a status the
gateway turns into problem details.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from wire import agent_api
from wire.actions import (
    Action,
    Click,
    Drag,
    HoldKey,
    KeyPress,
    ScreenshotAction,
    ScrollAction,
    TypeText,
    Wait,
    validate_action,
)
from wire.datachannel import control_message
from wire.errors import ActionError, WireError
from wire.keys import is_modifier

from .actions import drag_motions, execute_action
from .cdp import CdpProxy
from .control import InputGate, NotInControl
from .errors import AgentSideError
from .injector import InputInjector
from .limits import Transport, ViewerRefused
from .media import VideoSource
from .peers import OfferError, PeerManager
from .vnc import VncBridge
from .wsstream import StreamViewers

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SOURCE = web.AppKey("source", VideoSource)
GATE = web.AppKey("gate", InputGate)
PEERS = web.AppKey("peers", PeerManager)
STARTED = web.AppKey("started", float)
STREAMS = web.AppKey("streams", StreamViewers)
VNC = web.AppKey("vnc", VncBridge)
CDP = web.AppKey("cdp", CdpProxy)
STARTUP = web.AppKey("startup", dict)
"""Start-up spans in ms (``agent_imports``, ``x_wait``, ``first_capture``, ``serve``; a
claimed pooled agent: ``claim_resize``, ``claim_browser``...), reported by ``/health``."""
HEALTH_WAIT_MAX_S = 5.0
"""Longest ``GET /health?wait=S`` long poll (the gateway waits for the first frame)."""

TYPE_CHUNK = 32
"""Characters typed per gated step, so a ``take`` interrupts long typing quickly."""

POINTER_SETTLE_S = 0.05
"""Pause after moving the pointer and after pressing buttons (see ``_run_pointer``)."""
BUTTON_GAP_S = 0.015
"""Pause between button events, so each gets its own X server timestamp."""
SHORTCUT_SETTLE_S = 0.1
"""Pause after a key action with a modifier (ctrl+l, alt+tab): applications act on
shortcuts asynchronously (Chromium moves focus to the omnibox a few frames later),
and keys typed by the next action must not arrive before that."""


def _error(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


async def health(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    try:
        wait = min(max(float(request.query.get("wait", "0")), 0.0), HEALTH_WAIT_MAX_S)
    except ValueError:
        wait = 0.0
    first = await source.wait_first_frame(wait)
    return web.json_response({"ok": first, "first_frame": first,
                              "spans": request.app.get(STARTUP, {})})


async def stats(request: web.Request) -> web.Response:
    gate, peers, source = request.app[GATE], request.app[PEERS], request.app[SOURCE]
    streams = request.app.get(STREAMS)
    vnc = request.app.get(VNC)
    ws_viewers = streams.count if streams is not None else 0
    vnc_viewers = vnc.count if vnc is not None else 0
    return web.json_response({
        "viewers": peers.count + ws_viewers + vnc_viewers,
        "viewers_by_transport": {"webrtc": peers.count, "ws": ws_viewers, "vnc": vnc_viewers},
        "stream_viewers": streams.describe() if streams is not None else [],
        "peers": peers.describe(),
        "controller": gate.controller,
        "input_idle_s": time.monotonic() - gate.last_input,
        "inputs_applied": gate.applied,
        "inputs_refused": gate.refused,
        "messages_dropped": peers.messages_dropped,
        "input_dropped": dict(peers.inputs.dropped),
        "vnc_input_refused": vnc.input_refused if vnc is not None else 0,
        "vnc_protocol_errors": vnc.protocol_errors if vnc is not None else 0,
        "uptime_s": time.monotonic() - request.app[STARTED],
        "media": source.stats,
        "cdp": request.app[CDP].describe() if CDP in request.app else None,
        "limits": {**peers.admission.stats(),
                   "slow_cut": streams.slow_cut if streams is not None else 0},
    })


def refused(e: ViewerRefused) -> web.Response:
    """A viewer over a cap: 429/503 with ``Retry-After`` (the gateway maps it)."""
    return web.json_response(e.body(), status=e.status,
                             headers={"Retry-After": str(e.retry_after_s)})


def admitted(transport: Transport, handler: Handler) -> Handler:
    """*handler* (a WebSocket viewer, held open until it leaves) behind the viewer caps."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        admission = request.app[PEERS].admission
        try:
            ticket = admission.admit(transport,
                                     request.headers.get(agent_api.TOKEN_ID_HEADER, ""))
        except ViewerRefused as e:
            return refused(e)
        try:
            return await handler(request)
        finally:
            admission.release(ticket)
    return wrapped


async def whep_offer(request: web.Request) -> web.Response:
    kind = request.headers.get(agent_api.TOKEN_KIND_HEADER, "view")
    token_id = request.headers.get(agent_api.TOKEN_ID_HEADER, "")
    if kind not in ("view", "control", "api"):
        return _error(400, "bad_token_kind", f"unknown token kind {kind!r}")
    sdp = await request.text()
    try:
        peer_id, answer = await request.app[PEERS].answer(sdp, kind, token_id)  # type: ignore[arg-type]
    except ViewerRefused as e:
        return refused(e)
    except OfferError as e:
        return _error(400, "bad_offer", str(e))
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={agent_api.PEER_ID_HEADER: peer_id})


async def whep_delete(request: web.Request) -> web.Response:
    kind = request.headers.get(agent_api.TOKEN_KIND_HEADER, "view")
    if kind not in ("view", "control", "api"):
        kind = "view"
    if await request.app[PEERS].close(request.match_info["peer_id"], kind,  # type: ignore[arg-type]
                                      request.headers.get(agent_api.TOKEN_ID_HEADER, "")):
        return web.Response(status=204)
    return _error(404, "unknown_peer", "no such peer")


async def screenshot(request: web.Request) -> web.Response:
    png = await request.app[SOURCE].screenshot_png()
    return web.Response(body=png, content_type="image/png")


async def set_control(request: web.Request) -> web.Response:
    body = await request.json()
    controller = body.get("controller")
    if controller not in ("agent", "human"):
        return _error(400, "bad_controller", f"unknown controller {controller!r}")
    gate = request.app[GATE]
    await gate.set_controller(controller, body.get("owner"))
    request.app[PEERS].broadcast_control(controller)
    if CDP in request.app:
        request.app[CDP].on_control(controller)
    if STREAMS in request.app:
        await request.app[STREAMS].broadcast(control_message(controller))
    return web.json_response({"controller": gate.controller})


async def broadcast(request: web.Request) -> web.Response:
    """Send a JSON message to every viewer's data channel (control events etc.)."""
    payload = await request.json()
    request.app[PEERS].broadcast(payload)
    if STREAMS in request.app:
        await request.app[STREAMS].broadcast(json.dumps(payload))
    return web.json_response({"ok": True})


async def run_action(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _error(400, "bad_json", "body is not JSON")
    source, gate = request.app[SOURCE], request.app[GATE]
    injector = gate.injector
    try:
        action = validate_action(body, injector.width, injector.height)
    except ActionError as e:
        return _error(422, "invalid_action", e.message, field=e.field)
    try:
        if isinstance(action, ScreenshotAction):
            png = await source.screenshot_png()
            result = await gate.run_agent(lambda: execute_action(injector, action, lambda: png))
        elif isinstance(action, TypeText) and len(action.text) > TYPE_CHUNK:
            # "\r\n" split over two chunks would press Return twice.
            text = action.text.replace("\r\n", "\n")
            for start in range(0, len(text), TYPE_CHUNK):
                chunk = TypeText(text[start : start + TYPE_CHUNK])
                result = await gate.run_agent(_executor(injector, chunk))
        elif isinstance(action, Click | ScrollAction | Drag):
            result = await _run_pointer(gate, action)
        elif isinstance(action, Wait):
            # Waiting injects nothing: it must not hold the input lock, or a
            # `take` would block for up to the whole duration.
            await asyncio.sleep(action.duration)
            result = {"ok": True, "cursor": list(await gate.run_any(injector.cursor_position))}
        else:
            result = await gate.run_agent(lambda: execute_action(injector, action))
            if isinstance(action, KeyPress | HoldKey) and _has_modifier(action):
                await asyncio.sleep(SHORTCUT_SETTLE_S)
    except NotInControl as e:
        return _error(409, "human_in_control", str(e), controller=e.controller)
    except ActionError as e:
        return _error(422, "invalid_action", e.message, field=e.field)
    except (AgentSideError, WireError) as e:
        logger.warning("action %s failed: %s", body.get("action"), e)
        return _error(500, "action_failed", "the action could not be carried out")
    return web.json_response(result)


def _has_modifier(action: KeyPress | HoldKey) -> bool:
    combos = action.combos if isinstance(action, KeyPress) else (action.combo,)
    return any(is_modifier(k) for combo in combos for k in combo.keysyms)


async def _run_pointer(gate: InputGate, action: Click | ScrollAction | Drag) -> dict[str, Any]:
    """Pointer actions as paced, individually gated steps.

    X clients that read pointer input asynchronously (Chromium under Xvfb)
    mis-handle bursts: a press right after a motion is attributed to the old
    position, and of press/release pairs sent within one server millisecond
    (the same timestamp) the later ones are dropped, so a double click counted
    once and a drag lost its release. Measured with a recording page in the
    session's Chromium; ``xdotool`` paces its clicks for the same reason. A
    human may take control between any two steps; ``set_controller`` then
    releases whatever is held.
    """
    injector = gate.injector

    async def step(fn: Callable[[], object]) -> None:
        await gate.run_agent(fn)

    start = action.start if isinstance(action, Drag) else action.coordinate
    if start is not None:
        x, y = start
        await step(lambda: injector.mouse_move(x, y))
        await asyncio.sleep(POINTER_SETTLE_S)
    if isinstance(action, ScrollAction):
        result = await gate.run_agent(_executor(injector, action))
    else:
        keysyms = action.modifiers.keysyms if action.modifiers is not None else ()
        for keysym in keysyms:
            await step(functools.partial(injector.key_down, keysym))
        try:
            if isinstance(action, Drag):
                origin = start if start is not None else await gate.run_any(
                    injector.cursor_position)
                await step(lambda: injector.button_down("left"))
                for mx, my in drag_motions((origin, *action.via, action.end)):
                    await asyncio.sleep(BUTTON_GAP_S)
                    await step(functools.partial(injector.mouse_move, mx, my))
                await asyncio.sleep(POINTER_SETTLE_S)
                await step(lambda: injector.button_up("left"))
            else:
                button = action.button
                for i in range(action.count):
                    if i:
                        await asyncio.sleep(BUTTON_GAP_S)
                    await step(lambda: injector.button_down(button))
                    await asyncio.sleep(BUTTON_GAP_S)
                    await step(lambda: injector.button_up(button))
        finally:
            for keysym in reversed(keysyms):
                try:
                    await step(functools.partial(injector.key_up, keysym))
                except NotInControl:
                    pass  # the take released every key already
        result = {"ok": True}
    await asyncio.sleep(POINTER_SETTLE_S)
    result["cursor"] = list(await gate.run_any(injector.cursor_position))
    return result


def _executor(injector: InputInjector, action: Action) -> Callable[[], dict[str, Any]]:
    return lambda: execute_action(injector, action)


def create_app(source: VideoSource, gate: InputGate, peers: PeerManager, *,
               streams: StreamViewers | None = None,
               vnc: VncBridge | None = None,
               cdp: CdpProxy | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[SOURCE] = source
    app[GATE] = gate
    app[PEERS] = peers
    app[STARTED] = time.monotonic()
    app.router.add_get(agent_api.HEALTH, health)
    app.router.add_get(agent_api.STATS, stats)
    app.router.add_post(agent_api.WHEP, whep_offer)
    app.router.add_delete(agent_api.whep_peer("{peer_id}"), whep_delete)
    app.router.add_get(agent_api.SCREENSHOT, screenshot)
    app.router.add_post(agent_api.CONTROL, set_control)
    app.router.add_post(agent_api.BROADCAST, broadcast)
    app.router.add_post(agent_api.ACTIONS, run_action)
    if streams is not None:
        app[STREAMS] = streams
        app.router.add_get(agent_api.STREAM, admitted("ws", streams.handle))
    if vnc is not None:
        app[VNC] = vnc
        app.router.add_get(agent_api.VNC, admitted("vnc", vnc.handle))
    if cdp is not None:
        app[CDP] = cdp
        app.router.add_get(agent_api.CDP, cdp.handle)
        app.router.add_get(agent_api.CDP_VERSION, cdp.version)
        app.router.add_get(agent_api.CDP_TARGETS, cdp.targets)
        app.router.add_get(agent_api.CDP_SUMMARY + "/{connection}", cdp.summary)
    return app
