"""The session's Chromium over the DevTools protocol, for Playwright and Puppeteer.

Routes (API token, or the session's control token; a view token gets 403):

* ``GET /api/visual-sessions/{id}/cdp`` (WebSocket) -- the browser endpoint,
  proxied to the runtime agent's ``/cdp`` (``agent_side/cdp.py``), which holds
  a script's input while a human has control. Query: ``on_human=hold|refuse``,
  ``hold_timeout=<seconds>``, and ``token=`` for clients that cannot set headers.
* ``GET .../cdp/json/version`` -- the discovery document clients read before
  connecting; its ``webSocketDebuggerUrl`` points back here (same scheme, host,
  query), so ``chromium.connect_over_cdp("http://gw/api/visual-sessions/ID/cdp")``
  and ``puppeteer.connect({browserURL})`` work unchanged.
* ``GET .../cdp/json`` and ``.../cdp/json/list`` -- the browser's targets
  (informational: only the browser endpoint is served, no per-page sockets).

Every connection is an event (``cdp`` with ``status: "connected"``, then
``"closed"`` with the agent's summary: commands by method, held, refused,
dropped) and a log line.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp
from aiohttp import WSCloseCode, web

from gateway.appkeys import AUTH, MANAGER
from gateway.errors import ProblemError, forbidden
from gateway.http.viewer import SOCKETS, close_revoked, pump
from gateway.security.auth import Principal
from gateway.sessions.agent_link import AgentClient, AgentUnavailable
from gateway.sessions.session import Session
from wire import agent_api

__all__ = ["MAX_CDP_MESSAGE", "setup_routes"]

logger = logging.getLogger(__name__)

MAX_CDP_MESSAGE: Final = 16 * 1024 * 1024
"""Largest client message the gateway passes on (the agent drops those over 8 MiB
with an error reply, and closes at 16 MiB)."""
_QUERY_KEYS: Final = ("on_human", "hold_timeout", "token")


def _authorise(request: web.Request) -> tuple[Session, Principal]:
    session = request.app[MANAGER].get(request.match_info["session_id"])
    who = request.app[AUTH].session(request, session, allow_query=True)
    if not who.may_control:
        raise forbidden("a view token can watch but not drive the browser; "
                        "use the API token or a control token")
    return session, who


def _headers(who: Principal) -> dict[str, str]:
    return {agent_api.TOKEN_KIND_HEADER: who.kind, agent_api.TOKEN_ID_HEADER: who.token_id}


def _agent_problem(status: int, data: Any, path: str) -> ProblemError:
    detail = str(data.get("detail", "")) if isinstance(data, dict) else ""
    if status == 503:
        retry = str(data.get("retry_after", 2)) if isinstance(data, dict) else "2"
        return ProblemError(503, "browser-unavailable", "Browser unavailable",
                            detail or "the session's Chromium is not reachable",
                            headers={"Retry-After": retry})
    if status == 409:
        return ProblemError(409, "cdp-busy", "Another CDP client is connected",
                            detail or "one CDP client at a time", headers={"Retry-After": "5"})
    if status == 403:
        return forbidden(detail or "this token may not drive the browser")
    if status == 400:
        return ProblemError(400, "malformed-request", "Malformed request", detail or path)
    return ProblemError(502, "runtime-agent-unavailable", "Runtime agent unavailable",
                        f"the session's runtime agent failed on {path} (status {status})")


async def _agent_json(request: web.Request, path: str) -> Any:
    session, who = _authorise(request)
    agent = request.app[MANAGER].agent(session)
    try:
        reply = await agent.request("GET", path, headers=_headers(who), timeout=10)
        data = reply.json()
    except AgentUnavailable as e:
        raise ProblemError(502, "runtime-agent-unavailable", "Runtime agent unavailable",
                           "the session's runtime agent did not answer; try again") from e
    if reply.status != 200:
        raise _agent_problem(reply.status, data, path)
    return data


def _ws_url(request: web.Request) -> str:
    """This session's ``/cdp`` as a WebSocket URL, with the caller's own query kept."""
    scheme = "wss" if request.scheme == "https" else "ws"
    base = f"{scheme}://{request.host}/api/visual-sessions/{request.match_info['session_id']}/cdp"
    query = [(k, v) for k, v in request.query.items() if k in _QUERY_KEYS]
    return base + ("?" + urlencode(query) if query else "")


async def json_version(request: web.Request) -> web.Response:
    data = await _agent_json(request, agent_api.CDP_VERSION)
    return web.json_response({**data, "webSocketDebuggerUrl": _ws_url(request)},
                             headers={"Cache-Control": "no-store"})


async def json_list(request: web.Request) -> web.Response:
    data = await _agent_json(request, agent_api.CDP_TARGETS)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def cdp_socket(request: web.Request) -> web.StreamResponse:
    session, who = _authorise(request)
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise ProblemError(426, "upgrade-required", "Upgrade required",
                           "this is the DevTools WebSocket; discovery documents are at "
                           f"{request.path.rstrip('/')}/json/version",
                           headers={"Upgrade": "websocket"})
    manager = request.app[MANAGER]
    agent = manager.agent(session)
    sid = session.session_id
    conn = secrets.token_hex(6)
    query = {k: v for k, v in request.query.items() if k in ("on_human", "hold_timeout")}
    http = agent.open_http(connect_timeout=5)
    try:
        try:
            upstream = await http.ws_connect(
                agent.url(agent_api.CDP), params=query, autoping=True, heartbeat=None,
                compress=0, max_msg_size=0, autoclose=True, **agent.request_options,
                headers={**_headers(who), agent_api.CDP_CONNECTION_HEADER: conn})
        except aiohttp.WSServerHandshakeError as e:
            logger.info("session %s: CDP connection refused by the agent (%d)", sid, e.status)
            raise _agent_problem(e.status, {"detail": _refusal_detail(e.status)},
                                 agent_api.CDP) from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ProblemError(502, "runtime-agent-unavailable", "Runtime agent unavailable",
                               "the session's runtime agent did not answer; try again") from e
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_CDP_MESSAGE, heartbeat=30)
        await ws.prepare(request)
        manager.events.emit(sid, "cdp", status="connected", connection=conn,
                             token_kind=who.kind, on_human=query.get("on_human", "hold"))
        logger.info("session %s: CDP connection %s opened (%s token)", sid, conn, who.kind)
        sockets = request.app[SOCKETS].items
        sockets.add(ws)
        unregister = manager.live.add(sid, who.token_id, lambda: close_revoked(ws))
        try:
            if unregister is None:  # its token was revoked while this connected
                await close_revoked(ws)
            else:
                await pump(ws, upstream)
        finally:
            # The handler may be cancelled when the client goes (aiohttp's
            # handler_cancellation): the summary is fetched in a task of our own.
            if unregister is not None:
                unregister()
            sockets.discard(ws)
            closing = request.app[CLOSING].tasks
            task = asyncio.get_running_loop().create_task(
                _finish(request.app, sid, conn, upstream, agent))
            closing.add(task)
            task.add_done_callback(closing.discard)
            if upstream.close_code == WSCloseCode.SERVICE_RESTART:
                await ws.close(code=WSCloseCode.SERVICE_RESTART,
                               message=b"the session's Chromium exited and is restarting; reconnect")
            else:
                await ws.close()
        return ws
    finally:
        await http.close()


async def _finish(app: web.Application, sid: str, conn: str,
                  upstream: aiohttp.ClientWebSocketResponse, agent: AgentClient) -> None:
    """Close the agent side, then file the connection's summary as an event."""
    await upstream.close()
    summary = await _summary(agent, conn)
    if MANAGER in app:
        app[MANAGER].events.emit(sid, "cdp", status="closed", connection=conn, **summary)
    logger.info("session %s: CDP connection %s closed: %s", sid, conn, summary)


def _refusal_detail(status: int) -> str:
    return {
        409: "another CDP client is connected to this session's browser",
        503: "the session's Chromium is not running or is restarting; try again shortly",
        403: "this token may not drive the browser",
        400: "bad query: on_human must be hold or refuse, hold_timeout 0-600 seconds",
    }.get(status, f"the runtime agent refused the connection (status {status})")


async def _summary(agent: AgentClient, conn: str) -> dict[str, Any]:
    """The agent's summary of a finished connection (empty if it cannot say)."""
    try:
        async with agent.open_http() as http, http.get(
                agent.url(f"{agent_api.CDP_SUMMARY}/{conn}"), timeout=aiohttp.ClientTimeout(total=20),
                **agent.request_options) as resp:
            if resp.status == 200:
                data = await resp.json()
                if isinstance(data, dict):
                    data.pop("connection", None)
                    return data
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        pass
    return {}


class _Closing:
    """Tasks filing the summaries of connections that just closed."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()


CLOSING = web.AppKey("cdp_closing", _Closing)
"""Tasks filing the summaries of connections that just closed (awaited on shutdown)."""


async def _await_closing(app: web.Application) -> None:
    tasks = list(app[CLOSING].tasks)
    if tasks:
        await asyncio.wait(tasks, timeout=25)


def setup_routes(app: web.Application) -> None:
    """Add this feature's routes to the gateway app."""
    app[CLOSING] = _Closing()
    app.on_shutdown.append(_await_closing)
    r = app.router
    base = "/api/visual-sessions/{session_id}/cdp"
    r.add_get(base, cdp_socket)
    for suffix in ("/json/version", "/json/version/"):
        r.add_get(base + suffix, json_version)
    for suffix in ("/json", "/json/", "/json/list", "/json/list/"):
        r.add_get(base + suffix, json_list)
