"""``GET /cdp``: the session's Chromium DevTools for one client at a time.

The gateway authenticates the caller (API or control token; a view token is
refused there and here) and proxies its WebSocket to this route over the
agent's unix socket. Messages go to Chromium through :class:`BrowserLink`
(``cdp_link.py``) under the rules of ``cdp_policy.py``:

* **one client at a time** -- the browser has one DevTools pipe, and two
  automation clients on one browser would fight over its targets; a second
  connection gets 409 until the first closes;
* **a human in control holds the script's input.** Input and navigation
  commands sent while a human holds control wait in order until control goes
  back to the agent, then run (``on_human=hold``, the default; a command held
  longer than ``hold_timeout`` seconds, 60 by default, is answered with an
  error instead). With ``on_human=refuse`` they are answered at once with an
  error. Evaluations asking for a user gesture run without it; everything
  else goes on;
* bad input -- text that is not JSON, a message that is not a command, a
  method name that is not ``Domain.method``, a binary frame, a message over
  :data:`MAX_MESSAGE` -- is dropped and counted; a command with a usable id
  gets a CDP error reply. Messages over twice that size close the connection
  (1009);
* when the client goes away, what it left in the browser is undone: sessions
  it attached are detached (so no new tab waits for a debugger that is gone),
  auto-attach and target discovery are switched off, browser contexts it made
  are disposed and downloads go back to Chromium's default;
* when Chromium exits (the relay restarts it), every command in flight gets a
  CDP error, the socket closes with 1012 and a reason, and new connections get
  503 with a retry delay until the new browser is up.

Each connection ends with a summary (methods, held, refused, dropped) in the
agent's log and at ``GET /cdp/summary/{connection}`` for the gateway's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from wire import agent_api

from .cdp_link import BrowserLink, BrowserUnavailable, Reply
from .cdp_policy import BadCommand, Command, CommandClass, classify, parse_command
from .control import InputGate
from .errors import AgentSideError

__all__ = ["CdpProxy", "MAX_MESSAGE"]

logger = logging.getLogger(__name__)

MAX_MESSAGE: Final = 8 * 1024 * 1024
"""Largest client message forwarded (Playwright's injected scripts are ~1 MB)."""
HOLD_TIMEOUT_S: Final = 60.0
MAX_HOLD_TIMEOUT_S: Final = 600.0
MAX_BACKLOG: Final = 256 * 1024 * 1024
"""Bytes queued for a client that does not read before it is disconnected."""
CLEANUP_TIMEOUT_S: Final = 3.0
SUMMARY_KEEP: Final = 32
MAX_METHOD_NAMES: Final = 200
_ID_PREFIX = re.compile(r'^\s*\{\s*"id"\s*:\s*(\d{1,16})\s*[,}]')
SERVER_ERROR: Final = -32000
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601


def _error_frame(msg_id: int, code: int, message: str) -> str:
    return json.dumps({"id": msg_id, "error": {"code": code, "message": message}},
                      separators=(",", ":"))


@dataclass
class _Stats:
    connection: str
    token_kind: str
    on_human: str
    started: float = field(default_factory=time.time)
    commands: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    events: int = 0
    held: int = 0
    held_max_s: float = 0.0
    held_timed_out: int = 0
    refused_human: int = 0
    gestures_stripped: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    closed_by: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "connection": self.connection, "token_kind": self.token_kind,
            "on_human": self.on_human, "duration_s": round(time.time() - self.started, 3),
            "commands": self.commands, "events": self.events,
            "top_methods": dict(self.methods.most_common(10)),
            "held": self.held, "held_max_s": round(self.held_max_s, 3),
            "held_timed_out": self.held_timed_out, "refused_while_human": self.refused_human,
            "gestures_stripped": self.gestures_stripped,
            "dropped": dict(self.dropped), "closed_by": self.closed_by,
        }


@dataclass
class _Client:
    ws: web.WebSocketResponse
    stats: _Stats
    on_human: str
    hold_timeout: float
    outbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    backlog: int = 0
    inflight: dict[int, int] = field(default_factory=dict)
    """link id -> client id of commands sent and not yet answered."""
    held: asyncio.Queue[tuple[Command, float]] = field(default_factory=asyncio.Queue)
    holding: int = 0
    attached: set[str] = field(default_factory=set)
    contexts: set[str] = field(default_factory=set)
    lost: str = ""

    def send(self, text: str) -> None:
        self.backlog += len(text)
        self.outbox.put_nowait(text)


class CdpProxy:
    """The session's DevTools endpoint (one per runtime agent)."""

    def __init__(self, link: BrowserLink, gate: InputGate, session_id: str = "", *,
                 max_message: int = MAX_MESSAGE) -> None:
        self._link = link
        self._gate = gate
        self._sid = session_id
        self._max = max_message
        self._client: _Client | None = None
        self._agent_turn = asyncio.Event()
        if gate.controller == "agent":
            self._agent_turn.set()
        self._summaries: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.connections = 0
        self.dropped: Counter[str] = Counter()
        link.on_event = self._on_event

    # ------------------------------------------------------------ control
    def on_control(self, controller: str) -> None:
        """Control changed (called after the gate changed)."""
        if controller == "agent":
            self._agent_turn.set()
        else:
            self._agent_turn.clear()

    def describe(self) -> dict[str, Any]:
        return {"connected": self._client is not None, "connections": self.connections,
                "holding": self._client.holding if self._client is not None else 0,
                "dropped": dict(self.dropped), "browser_generation": self._link.generation}

    # ----------------------------------------------------------- handlers
    async def version(self, request: web.Request) -> web.Response:
        """``/json/version`` without the WebSocket URL (the gateway adds its own)."""
        try:
            await self._link.connect()
            v = await self._link.call("Browser.getVersion")
        except BrowserUnavailable as e:
            return _unavailable(e)
        except AgentSideError as e:
            return web.json_response({"error": "browser_error", "detail": str(e)}, status=502)
        return web.json_response({
            "Browser": v.get("product", ""), "Protocol-Version": v.get("protocolVersion", ""),
            "User-Agent": v.get("userAgent", ""), "V8-Version": v.get("jsVersion", ""),
            "WebKit-Version": v.get("revision", ""),
        })

    async def targets(self, request: web.Request) -> web.Response:
        """``/json/list``: the browser's pages (informational: only the browser endpoint is served)."""
        try:
            await self._link.connect()
            infos = (await self._link.call("Target.getTargets")).get("targetInfos", [])
        except BrowserUnavailable as e:
            return _unavailable(e)
        except AgentSideError as e:
            return web.json_response({"error": "browser_error", "detail": str(e)}, status=502)
        return web.json_response([
            {"id": t.get("targetId"), "type": t.get("type"), "title": t.get("title"),
             "url": t.get("url"), "attached": t.get("attached")}
            for t in infos if isinstance(t, dict)])

    async def summary(self, request: web.Request) -> web.Response:
        """The summary of a connection, once it has ended (waits up to 15 s)."""
        future = self._summaries.get(request.match_info["connection"])
        if future is None:
            return web.json_response({"error": "unknown_connection", "detail": "no such connection"},
                                     status=404)
        try:
            return web.json_response(await asyncio.wait_for(asyncio.shield(future), 15))
        except TimeoutError:
            return web.json_response({"error": "still_open", "detail": "the connection is open"},
                                     status=409)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.headers.get(agent_api.TOKEN_KIND_HEADER, "view")
        if kind not in ("api", "control"):
            return web.json_response({"error": "forbidden", "detail":
                                      "driving the browser needs an API or control token"},
                                     status=403)
        on_human = request.query.get("on_human", "hold")
        if on_human not in ("hold", "refuse"):
            return web.json_response({"error": "bad_query", "detail":
                                      f"on_human must be hold or refuse, not {on_human[:40]!r}"},
                                     status=400)
        try:
            hold_timeout = float(request.query.get("hold_timeout", HOLD_TIMEOUT_S))
        except ValueError:
            hold_timeout = -1
        if not 0 < hold_timeout <= MAX_HOLD_TIMEOUT_S:
            return web.json_response({"error": "bad_query", "detail":
                                      f"hold_timeout must be in (0, {MAX_HOLD_TIMEOUT_S:g}] seconds"},
                                     status=400)
        if self._client is not None:
            return web.json_response({"error": "cdp_busy", "detail":
                                      "another CDP client is connected to this session's browser"},
                                     status=409)
        try:
            await self._link.connect()
        except BrowserUnavailable as e:
            return _unavailable(e)
        conn = request.headers.get(agent_api.CDP_CONNECTION_HEADER) or secrets.token_hex(6)
        conn = re.sub(r"[^A-Za-z0-9_-]", "", conn)[:32] or secrets.token_hex(6)
        ws = web.WebSocketResponse(max_msg_size=2 * self._max, autoping=True, heartbeat=30)
        await ws.prepare(request)
        if self._client is not None:  # lost a race with another upgrade
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"another CDP client is connected")
            return ws
        client = _Client(ws, _Stats(conn, kind, on_human), on_human, hold_timeout)
        self._client = client
        self.connections += 1
        self._remember(conn)
        logger.info("session %s: CDP client %s connected (%s token, on_human=%s)",
                    self._sid, conn, kind, on_human)
        unsubscribe = self._link.on_lost(lambda reason: self._browser_lost(client, reason))
        tasks = [asyncio.create_task(self._write_loop(client), name=f"cdp-out-{conn}"),
                 asyncio.create_task(self._hold_loop(client), name=f"cdp-held-{conn}")]
        try:
            await self._read_loop(client)
        finally:
            unsubscribe()
            client.outbox.put_nowait(None)
            for task in tasks[1:]:
                task.cancel()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tasks[0], 2)
            tasks[0].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._link.forget(set(client.inflight))
            if not client.stats.closed_by:
                client.stats.closed_by = "client"
            if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                self._drop(client, "oversized")
            await self._clean_up(client)
            self._client = None
            summary = client.stats.summary()
            logger.info("session %s: CDP client %s disconnected: %s", self._sid, conn,
                        json.dumps(summary, separators=(",", ":")))
            future = self._summaries.get(conn)
            if future is not None and not future.done():
                future.set_result(summary)
        return ws

    def _remember(self, conn: str) -> None:
        self._summaries[conn] = asyncio.get_running_loop().create_future()
        while len(self._summaries) > SUMMARY_KEEP:
            oldest = next(iter(self._summaries))
            if not self._summaries[oldest].done():
                break
            del self._summaries[oldest]

    # ------------------------------------------------------------ client -> browser
    async def _read_loop(self, client: _Client) -> None:
        async for msg in client.ws:
            if msg.type == WSMsgType.TEXT:
                self._on_text(client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                self._drop(client, "binary")
            elif msg.type == WSMsgType.ERROR:
                break
            if client.lost:
                break

    def _drop(self, client: _Client, why: str) -> None:
        client.stats.dropped[why] += 1
        self.dropped[why] += 1
        logger.debug("session %s: CDP message dropped (%s)", self._sid, why)

    def _on_text(self, client: _Client, text: str) -> None:
        if len(text) > self._max:
            self._drop(client, "oversized")
            match = _ID_PREFIX.match(text[:64])
            if match:
                client.send(_error_frame(int(match.group(1)), INVALID_REQUEST,
                                         f"message larger than {self._max} bytes; dropped"))
            return
        try:
            command = parse_command(json.loads(text))
        except ValueError as e:
            bad = e if isinstance(e, BadCommand) else BadCommand("not JSON")
            self._drop(client, "unknown_method" if bad.unknown else "malformed")
            if bad.msg_id is not None:
                client.send(_error_frame(bad.msg_id, METHOD_NOT_FOUND if bad.unknown
                                         else INVALID_REQUEST, bad.reason))
            return
        stats = client.stats
        stats.commands += 1
        name = command.method if (command.method in stats.methods
                                  or len(stats.methods) < MAX_METHOD_NAMES) else "(other)"
        stats.methods[name] += 1
        kind = classify(command)
        if kind is CommandClass.REFUSED:
            self._drop(client, "refused_method")
            client.send(_error_frame(command.id, SERVER_ERROR,
                                     f"{command.method} is not allowed on a Visual Runtime session"))
            return
        if kind is CommandClass.INPUT and (client.holding or not self._agent_turn.is_set()):
            if client.on_human == "refuse":
                stats.refused_human += 1
                client.send(_error_frame(command.id, SERVER_ERROR,
                                         f"a human holds control of this session: {command.method} "
                                         "refused (on_human=refuse)"))
                return
            client.holding += 1
            client.held.put_nowait((command, time.monotonic()))
            return
        strip = kind is CommandClass.GESTURE and not self._agent_turn.is_set()
        if strip:
            stats.gestures_stripped += 1
        self._forward(client, command, strip=strip)

    def _forward(self, client: _Client, command: Command, *, strip: bool = False) -> None:
        parse = command.method in ("Target.createBrowserContext", "Target.attachToTarget")
        if command.method == "Target.disposeBrowserContext":
            client.contexts.discard(str(command.params.get("browserContextId")))
        try:
            link_id = self._link.send(command.to_message(strip_gesture=strip),
                                      self._reply_to(client, command), parse=parse,
                                      caller_id=command.id)
        except BrowserUnavailable as e:
            client.send(_error_frame(command.id, SERVER_ERROR, e.reason))
            return
        client.inflight[link_id] = command.id
        if classify(command) is CommandClass.INPUT:
            self._gate.last_input = time.monotonic()  # the session is not idle

    def _reply_to(self, client: _Client, command: Command) -> Reply:
        def reply(link_id: int, frame: bytes, parsed: dict[str, Any] | None) -> None:
            client.inflight.pop(link_id, None)
            if b'"code":-32601' in frame[:96]:
                self._drop(client, "unknown_method")  # Chromium does not know the method
            if parsed is not None and isinstance(parsed.get("result"), dict):
                result = parsed["result"]
                if "browserContextId" in result:
                    client.contexts.add(str(result["browserContextId"]))
                if "sessionId" in result and command.session_id is None:
                    client.attached.add(str(result["sessionId"]))
            client.send(frame.decode(errors="replace"))
        return reply

    async def _hold_loop(self, client: _Client) -> None:
        while True:
            command, since = await client.held.get()
            remaining = since + client.hold_timeout - time.monotonic()
            if not self._agent_turn.is_set():
                try:
                    await asyncio.wait_for(self._agent_turn.wait(), max(0.0, remaining))
                except TimeoutError:
                    client.stats.held_timed_out += 1
                    client.holding -= 1
                    client.send(_error_frame(command.id, SERVER_ERROR,
                                             f"a human held control of this session for "
                                             f"{client.hold_timeout:g} s: {command.method} dropped"))
                    continue
            waited = time.monotonic() - since
            client.stats.held += 1
            client.stats.held_max_s = max(client.stats.held_max_s, waited)
            client.holding -= 1
            self._forward(client, command)

    # ------------------------------------------------------------ browser -> client
    def _on_event(self, frame: bytes) -> None:
        client = self._client
        if client is None:
            return
        head = frame[:48]
        if b'"Target.attachedToTarget"' in head or b'"Target.detachedFromTarget"' in head:
            with contextlib.suppress(ValueError):
                event = json.loads(frame)
                params = event.get("params") or {}
                if "sessionId" not in event and isinstance(params.get("sessionId"), str):
                    if event.get("method") == "Target.attachedToTarget":
                        client.attached.add(params["sessionId"])
                    else:
                        client.attached.discard(params["sessionId"])
        client.stats.events += 1
        client.send(frame.decode(errors="replace"))

    async def _write_loop(self, client: _Client) -> None:
        while True:
            text = await client.outbox.get()
            if text is None:
                if client.lost:
                    await client.ws.close(code=WSCloseCode.SERVICE_RESTART,
                                          message=client.lost.encode()[:120])
                return
            client.backlog -= len(text)
            if client.backlog > MAX_BACKLOG:
                client.stats.closed_by = "proxy: the client did not read its messages"
                await client.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"client too slow")
                return
            try:
                await client.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    def _browser_lost(self, client: _Client, reason: str) -> None:
        client.lost = reason
        client.stats.closed_by = f"browser: {reason}"
        for msg_id in client.inflight.values():
            client.send(_error_frame(msg_id, SERVER_ERROR, reason))
        client.inflight.clear()
        while not client.held.empty():
            command, _ = client.held.get_nowait()
            client.send(_error_frame(command.id, SERVER_ERROR, reason))
        client.outbox.put_nowait(None)  # the write loop sends the errors, then closes

    async def _clean_up(self, client: _Client) -> None:
        """Undo what the client left in the browser (see the module docstring)."""
        if not self._link.connected:
            return
        calls: list[tuple[str, dict[str, Any], str | None]] = []
        for sid in sorted(client.attached):
            calls.append(("Runtime.runIfWaitingForDebugger", {}, sid))
            calls.append(("Target.detachFromTarget", {"sessionId": sid}, None))
        calls.append(("Target.setAutoAttach", {"autoAttach": False,
                                               "waitForDebuggerOnStart": False}, None))
        calls.append(("Target.setDiscoverTargets", {"discover": False}, None))
        calls.append(("Browser.setDownloadBehavior", {"behavior": "default"}, None))
        for ctx in sorted(client.contexts):
            calls.append(("Target.disposeBrowserContext", {"browserContextId": ctx}, None))
        results = await asyncio.gather(*(
            self._link.call(method, params, session_id=sid, timeout=CLEANUP_TIMEOUT_S)
            for method, params, sid in calls), return_exceptions=True)
        failed = [calls[i][0] for i, r in enumerate(results) if isinstance(r, BaseException)]
        if failed:
            logger.debug("session %s: CDP clean-up steps failed: %s", self._sid, failed)

    async def aclose(self) -> None:
        client = self._client
        if client is not None:
            await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"the session is stopping")
        await self._link.aclose()


def _unavailable(e: BrowserUnavailable) -> web.Response:
    return web.json_response({"error": "browser_unavailable", "detail": e.reason,
                              "retry_after": e.retry_after}, status=503,
                             headers={"Retry-After": str(e.retry_after)})
