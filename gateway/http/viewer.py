"""The viewer page and its WebSocket transports.

Routes:

* ``GET /sessions/{id}/?token=`` — the viewer page (``web/index.html``);
  ``GET /sessions/{id}/vnc/?token=`` — the noVNC page (``web/vnc.html``).
  Both check the token (``?token=`` allowed) so a bad link fails with 401/403
  instead of a page that cannot connect.
* ``GET /sessions/{id}/info`` — JSON for the page: its token's kind, whether
  it holds control, the remote size, the ICE servers for its WebRTC peer and
  the origins its embed mode may talk to (``--allowed-origins``).
* ``GET /viewer/...`` — the page's static ES modules, CSS and the vendored
  noVNC (``web/vendor/novnc``, fetched by ``scripts/fetch-novnc.sh``); no
  secrets, no auth.
* ``GET /sessions/{id}/stream`` (WebSocket) — H.264 for WebCodecs plus input,
  proxied to the runtime agent's ``/stream``;
  ``GET /sessions/{id}/vnc/websockify`` (WebSocket) — RFB for noVNC, proxied
  to the agent's ``/vnc``. Session, control or API token, ``?token=``
  allowed; the agent learns who it is through ``X-VR-Token-Kind`` and
  ``X-VR-Token-Id`` (as for WHEP) and applies the control rules itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from gateway.appkeys import AUTH, CONFIG, MANAGER
from gateway.config import WEB_DIR
from gateway.errors import ProblemError, not_found
from gateway.http.ice import ice_servers_for, rtc_ice_servers
from gateway.http.viewer_limits import viewer_limit_problem
from gateway.security.cors import allowed as allowed_origins
from gateway.sessions.session import Controller
from gateway.sessions.tokens import token_hash
from wire import agent_api

__all__ = ["setup_routes"]

logger = logging.getLogger(__name__)

MAX_BROWSER_MESSAGE: Final = 2 * 1024 * 1024
"""Largest WebSocket message taken from a browser (the agent caps input at 1 MiB)."""
"""The page's files (``web/`` at the project root)."""

class _OpenSockets:
    """Browser-side WebSockets being proxied, closed on shutdown."""

    def __init__(self) -> None:
        self.items: set[web.WebSocketResponse] = set()


SOCKETS = web.AppKey("viewer_sockets", _OpenSockets)

_PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    # The token is in the URL: never leak it to another origin.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(name: str) -> web.FileResponse:
    path = WEB_DIR / name
    if not path.is_file():
        raise not_found(f"the viewer file {name!r} is not installed")
    return web.FileResponse(path, headers={**_PAGE_HEADERS,
                                           "Content-Type": "text/html; charset=utf-8"})


async def viewer_redirect(request: web.Request) -> web.StreamResponse:
    query = request.query_string
    raise web.HTTPMovedPermanently(request.path + "/" + (f"?{query}" if query else ""))


async def viewer_page(request: web.Request) -> web.StreamResponse:
    session = request.app[MANAGER].get(request.match_info["session_id"])
    request.app[AUTH].session(request, session, allow_query=True)
    return _page("index.html")


async def vnc_page(request: web.Request) -> web.StreamResponse:
    session = request.app[MANAGER].get(request.match_info["session_id"])
    request.app[AUTH].session(request, session, allow_query=True)
    if not (WEB_DIR / "vendor" / "novnc" / "core" / "rfb.js").is_file():
        raise ProblemError(503, "novnc-missing", "noVNC not installed",
                           "noVNC is not installed on this gateway; run scripts/fetch-novnc.sh")
    return _page("vnc.html")


async def viewer_info(request: web.Request) -> web.Response:
    """What the page needs to know about its own token (kind, whether it holds control)."""
    session = request.app[MANAGER].get(request.match_info["session_id"])
    who = request.app[AUTH].session(request, session, allow_query=True)
    width, height = session.spec.resolution
    holds = (session.controller is Controller.HUMAN
             and session.controller_token_hash == token_hash(who.token))
    return web.json_response({
        "session_id": session.session_id, "status": session.status.value,
        "token_kind": who.kind, "may_control": who.may_control,
        "controller": session.controller.value, "holds_control": holds,
        "width": width, "height": height,
        "enable_recording": session.spec.enable_recording,
        "enable_file_transfer": session.spec.enable_file_transfer,
        "ice_servers": rtc_ice_servers(ice_servers_for(request, who)),
        "embed_origins": sorted(allowed_origins(request.app[CONFIG])),
    }, headers={"Cache-Control": "no-store"})


async def _proxy(request: web.Request, agent_path: str, protocols: tuple[str, ...]) -> web.StreamResponse:
    manager = request.app[MANAGER]
    session = manager.get(request.match_info["session_id"])
    who = request.app[AUTH].session(request, session, allow_query=True)
    if not web.WebSocketResponse(protocols=protocols).can_prepare(request).ok:
        raise ProblemError(426, "upgrade-required", "Upgrade required",
                           "this endpoint is a WebSocket: connect with 'Upgrade: websocket'",
                           headers={"Upgrade": "websocket"})
    agent = manager.agent(session)
    sid = session.session_id
    http = agent.open_http(connect_timeout=5)
    try:
        try:
            upstream = await http.ws_connect(
                agent.url(agent_path), protocols=protocols, autoping=True, heartbeat=None,
                compress=0, max_msg_size=0, autoclose=True,
                headers={agent_api.TOKEN_KIND_HEADER: who.kind, agent_api.TOKEN_ID_HEADER: who.token_id},
                **agent.request_options,
            )
        except aiohttp.WSServerHandshakeError as e:
            if e.status == 429 or (e.status == 503 and e.headers and "Retry-After" in e.headers):
                transport = "ws" if agent_path == agent_api.STREAM else "vnc"
                raise viewer_limit_problem(manager, sid, transport, e.status, e.headers,
                                           None) from e
            logger.warning("session %s: agent refused %s: %s", sid, agent_path, e.status)
            raise ProblemError(503 if e.status == 503 else 502, "transport-unavailable",
                               "Transport unavailable",
                               f"the session's runtime agent refused {agent_path!r} "
                               f"(status {e.status})", headers={"Retry-After": "2"}) from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            logger.warning("session %s: agent unreachable for %s: %s", sid, agent_path, e)
            raise ProblemError(502, "runtime-agent-unavailable", "Runtime agent unavailable",
                               "the session's runtime agent did not answer; try again") from e
        # Browsers send input and small RFB messages only: a bigger frame closes the
        # socket (1009) here instead of being buffered whole on its way to the agent.
        ws = web.WebSocketResponse(protocols=protocols, compress=False,
                                   max_msg_size=MAX_BROWSER_MESSAGE, heartbeat=30)
        await ws.prepare(request)
        sockets = request.app[SOCKETS].items
        sockets.add(ws)
        unregister = manager.live.add(sid, who.token_id, lambda: close_revoked(ws))
        logger.info("session %s: %s proxied for a %s token", sid, agent_path, who.kind)
        try:
            if unregister is None:  # its token was revoked while this connected
                await close_revoked(ws)
            else:
                await _pump(ws, upstream)
        finally:
            if unregister is not None:
                unregister()
            sockets.discard(ws)
            await upstream.close()
            await ws.close()
            logger.info("session %s: %s proxy closed", sid, agent_path)
        return ws
    finally:
        await http.close()


async def _pump(browser: web.WebSocketResponse, agent: aiohttp.ClientWebSocketResponse) -> None:
    """Copy messages both ways until one side closes."""

    async def down() -> None:
        async for msg in agent:
            if msg.type == WSMsgType.BINARY:
                await browser.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await browser.send_str(msg.data)
            else:
                break

    async def up() -> None:
        async for msg in browser:
            if msg.type == WSMsgType.BINARY:
                await agent.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await agent.send_str(msg.data)
            else:
                break

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.debug("websocket proxy ended: %s", task.exception())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


pump = _pump
"""Shared with :mod:`gateway.http.cdp` (the same two-way copy)."""


async def close_revoked(ws: web.WebSocketResponse) -> None:
    """Close a viewer's WebSocket because its token was revoked (1008, policy)."""
    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"token revoked")


async def stream_socket(request: web.Request) -> web.StreamResponse:
    return await _proxy(request, agent_api.STREAM, ())


async def vnc_socket(request: web.Request) -> web.StreamResponse:
    return await _proxy(request, agent_api.VNC, ("binary",))


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS].items):
        await ws.close(code=1001, message=b"gateway shutting down")


def setup_routes(app: web.Application) -> None:
    """Add this feature's routes to the gateway app."""
    app[SOCKETS] = _OpenSockets()
    app.on_shutdown.append(_close_sockets)
    r = app.router
    r.add_get("/sessions/{session_id}", viewer_redirect)
    r.add_get("/sessions/{session_id}/", viewer_page)
    r.add_get("/sessions/{session_id}/info", viewer_info)
    r.add_get("/sessions/{session_id}/stream", stream_socket)
    r.add_get("/sessions/{session_id}/vnc", viewer_redirect)
    r.add_get("/sessions/{session_id}/vnc/", vnc_page)
    r.add_get("/sessions/{session_id}/vnc/websockify", vnc_socket)
    r.add_static("/viewer/", WEB_DIR, show_index=False, follow_symlinks=False)
