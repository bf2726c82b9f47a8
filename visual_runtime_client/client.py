"""An async Python client for agent hosts: sessions, actions, control and events.

::

    async with VisualRuntimeClient("http://127.0.0.1:3000", token) as client:
        session = await client.create_session(resolution="1280x800")
        png = await session.screenshot()
        await session.click(640, 400)
        await session.type_text("hello\\n")
        async for event in session.events():
            ...

Exceptions (every HTTP error of the gateway is RFC 9457 problem details and
maps onto one class; the problem's fields are kept on the exception)::

    ClientError                    base of everything this module raises
    ├── TransportError             the gateway could not be reached / the stream broke
    └── ApiError                   the gateway answered with an error status
        ├── BadRequest             400
        ├── Unauthorized           401
        ├── Forbidden              403
        ├── NotFound               404
        ├── Conflict               409
        │   ├── HumanInControl     409 ``human-in-control``: wait_for_control(), then retry
        │   └── SessionNotRunning  409 ``session-not-running``
        ├── PayloadTooLarge        413
        ├── UnsupportedMediaType   415
        ├── ValidationError        422, ``errors`` = [FieldError(field, message)]
        └── Unavailable            429 / 503, ``retry_after`` seconds
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeAlias

import aiohttp

__all__ = [
    "ApiError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "ControlState",
    "Event",
    "FieldError",
    "Forbidden",
    "HumanInControl",
    "MintedToken",
    "NotFound",
    "PayloadTooLarge",
    "RemoteSession",
    "Revocation",
    "SessionNotRunning",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "VisualRuntimeClient",
    "token_id",
]

logger = logging.getLogger(__name__)

Controller: TypeAlias = Literal["agent", "human"]
Button: TypeAlias = Literal["left", "middle", "right"]
ScrollDirection: TypeAlias = Literal["up", "down", "left", "right"]

TERMINAL_STATUSES = frozenset({"stopped", "expired", "failed"})
API = "/api/visual-sessions"


# ------------------------------------------------------------------ errors
class ClientError(Exception):
    """Base class of this client's exceptions."""


class TransportError(ClientError):
    """The gateway could not be reached, or a response or stream broke off."""


@dataclass(frozen=True)
class FieldError:
    """One invalid field named by a 422 answer."""

    field: str
    message: str


class ApiError(ClientError):
    """The gateway answered with an error status (problem details in the fields)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.title}: {self.detail}".strip())

    @property
    def slug(self) -> str:
        """The last part of ``type`` (``human-in-control``, ``validation-error``...)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]


class BadRequest(ApiError):
    """400: malformed body or parameters."""


class Unauthorized(ApiError):
    """401: missing or wrong token."""


class Forbidden(ApiError):
    """403: the token may not do this (view token, another session's token)."""


class NotFound(ApiError):
    """404: no such session (or file, recording)."""


class Conflict(ApiError):
    """409: the session's state does not allow this now."""


class HumanInControl(Conflict):
    """409: a human holds control; agent actions resume after a ``release``."""


class SessionNotRunning(Conflict):
    """409: the session is not running (starting, stopped...)."""


class PayloadTooLarge(ApiError):
    """413."""


class UnsupportedMediaType(ApiError):
    """415."""


class ValidationError(ApiError):
    """422: ``errors`` lists the invalid fields."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        super().__init__(status, problem)
        self.errors = [FieldError(str(e.get("field", "")), str(e.get("message", "")))
                       for e in problem.get("errors", []) if isinstance(e, Mapping)]


class Unavailable(ApiError):
    """429/503: at capacity; retry after ``retry_after`` seconds."""

    def __init__(self, status: int, problem: Mapping[str, Any],
                 retry_after: float | None = None) -> None:
        super().__init__(status, problem)
        self.retry_after = retry_after


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 422: ValidationError,
}
_CONFLICTS: dict[str, type[Conflict]] = {
    "human-in-control": HumanInControl, "session-not-running": SessionNotRunning,
}


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """Map an error answer (problem details, or anything else) onto the exception tree."""
    try:
        problem = json.loads(body) if body else {}
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    problem.setdefault("status", status)
    problem.setdefault("detail", body[:200].decode(errors="replace") if body else "")
    if status in (429, 503):
        retry: float | None
        try:
            retry = float(headers.get("Retry-After", ""))
        except ValueError:
            retry = None
        return Unavailable(status, problem, retry)
    if status == 409:
        slug = str(problem.get("type", "")).rstrip("/").rsplit("/", 1)[-1]
        return _CONFLICTS.get(slug, Conflict)(status, problem)
    return _BY_STATUS.get(status, ApiError)(status, problem)


# ------------------------------------------------------------ value types
@dataclass(frozen=True)
class Event:
    """One session event (``GET .../events``)."""

    id: int
    """Sequence number within the session; resume after it with ``Last-Event-ID``."""
    type: str
    """``status``, ``control``, ``viewer_joined``, ``viewer_left``, ``action``, ``file``..."""
    ts: str
    """RFC 3339 time the gateway emitted it."""
    data: dict[str, Any] = field(default_factory=dict)
    """The whole JSON payload (includes ``ts`` and ``type``)."""


@dataclass(frozen=True)
class MintedToken:
    """A token minted by :meth:`RemoteSession.mint_token`."""

    kind: str
    token: str
    token_id: str
    """What :meth:`RemoteSession.revoke_token` takes (not secret)."""
    viewer_url: str


@dataclass(frozen=True)
class Revocation:
    """What :meth:`RemoteSession.revoke_token` did."""

    token_id: str
    kind: str
    closed: int
    """Open viewer connections (WHEP peers, WebSockets) it closed."""
    released_control: bool


_TOKEN_ID = re.compile(r"[0-9a-f]{32}")


def token_id(token: str) -> str:
    """A token's id: the first 32 hex digits of its SHA-256 (safe to log and store)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ControlState:
    """Who holds input control of a session."""

    controller: Controller
    since: str
    screenshot_url: str | None = None
    """Set when control came back to the agent through a ``control`` event."""


# ------------------------------------------------------------------ client
class VisualRuntimeClient:
    """Talks to one gateway with the API token. Use ``async with`` or :meth:`aclose`."""

    def __init__(self, base_url: str, token: str, *,
                 http: aiohttp.ClientSession | None = None,
                 timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._timeout = timeout
        self._own_http = http is None
        self._http = http
        self._closed = False

    async def __aenter__(self) -> VisualRuntimeClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool (idempotent; a passed-in session stays open)."""
        self._closed = True
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    # --------------------------------------------------------- plumbing
    @property
    def http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientError("the client is closed")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    def _headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      token: str | None = None, timeout: float | None = None,
                      expect: str = "json") -> Any:
        """One API call; returns the JSON body (``expect="bytes"``: raw body)."""
        url = self.base_url + path
        try:
            async with self.http.request(
                method, url, json=json_body, headers=self._headers(token),
                timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise error_from_response(resp.status, body, resp.headers)
        except aiohttp.ClientError as e:
            raise TransportError(f"{method} {url}: {e}") from e
        except TimeoutError as e:
            raise TransportError(f"{method} {url}: timed out") from e
        if expect == "bytes":
            return body
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError as e:
            raise TransportError(f"{method} {url}: the answer is not JSON") from e

    # --------------------------------------------------------- sessions
    async def create_session(self, *, wait: bool = True, **options: Any) -> RemoteSession:
        """``POST /api/visual-sessions`` with *options* (resolution, start_url...).

        With *wait* (default) returns once the session is ``running`` (or failed:
        check :attr:`RemoteSession.status`). The returned session carries the
        ``view``/``control`` tokens, which the gateway returns only here.
        """
        created = await self.request("POST", API, json_body=options)
        session = RemoteSession(self, created)
        if wait:
            await session.refresh(wait=True)
        return session

    async def get_session(self, session_id: str, *, wait: bool = False) -> RemoteSession:
        session = RemoteSession(self, {"session_id": session_id})
        await session.refresh(wait=wait)
        return session

    async def list_sessions(self, status: str | None = None) -> list[RemoteSession]:
        path = API + (f"?status={status}" if status else "")
        data = await self.request("GET", path)
        return [RemoteSession(self, s) for s in data.get("sessions", [])]

    async def stop_session(self, session_id: str) -> dict[str, Any]:
        return dict(await self.request("POST", f"{API}/{session_id}/stop"))

    async def delete_session(self, session_id: str) -> None:
        await self.request("DELETE", f"{API}/{session_id}")

    def session(self, session_id: str) -> RemoteSession:
        """A handle for a known session id, without a request."""
        return RemoteSession(self, {"session_id": session_id})


class RemoteSession:
    """One session of the gateway, as seen by an agent host."""

    def __init__(self, client: VisualRuntimeClient, info: Mapping[str, Any]) -> None:
        self.client = client
        self.info: dict[str, Any] = dict(info)
        """The session object as last fetched (see :meth:`refresh`)."""
        self.session_id: str = str(info["session_id"])
        self.tokens: dict[str, str] | None = (dict(info["tokens"]) if info.get("tokens")
                                              else None)
        self.info.pop("tokens", None)

    def __repr__(self) -> str:
        return f"<RemoteSession {self.session_id} {self.info.get('status', '?')}>"

    @property
    def status(self) -> str | None:
        status = self.info.get("status")
        return str(status) if status is not None else None

    @property
    def path(self) -> str:
        return f"{API}/{self.session_id}"

    def viewer_url(self, kind: Literal["view", "control"] = "control") -> str:
        """Absolute viewer URL with this session's *kind* token (tokens from create only)."""
        if not self.tokens:
            raise ClientError("the session tokens are only known to the creator")
        return f"{self.client.base_url}/sessions/{self.session_id}/?token={self.tokens[kind]}"

    async def refresh(self, *, wait: bool = False) -> dict[str, Any]:
        """Fetch the session object (``wait``: block up to 30 s for ``running``)."""
        suffix = "?wait=running" if wait else ""
        self.info = dict(await self.client.request("GET", self.path + suffix,
                                                   timeout=max(self.client._timeout, 40)))
        return self.info

    async def stop(self) -> dict[str, Any]:
        self.info = await self.client.stop_session(self.session_id)
        return self.info

    async def delete(self) -> None:
        await self.client.delete_session(self.session_id)

    async def logs(self) -> list[dict[str, Any]]:
        """The session's event and process log (kept after it ends), oldest first."""
        body: bytes = await self.client.request("GET", self.path + "/logs", expect="bytes")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    # ---------------------------------------------------------- actions
    async def act(self, action: str, **fields: Any) -> dict[str, Any]:
        """Any computer-use action, e.g. ``act("left_click", coordinate=[10, 20])``.

        Raises :class:`HumanInControl` while a human holds control.
        """
        body = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
        timeout = self.client._timeout + float(fields.get("duration") or 0)
        timeout += len(str(fields.get("text") or "")) * 0.05
        return dict(await self.client.request("POST", self.path + "/actions", json_body=body,
                                              timeout=timeout))

    async def screenshot(self) -> bytes:
        """A PNG of the screen (an agent action), at the session's ``agent_resolution``
        if it has one, else at its resolution; coordinates are in its pixels."""
        result = await self.act("screenshot")
        return base64.b64decode(result["base64_image"])

    async def view_screenshot(self) -> bytes:
        """A PNG through ``GET .../screenshot`` (not an action: works while a human drives)."""
        body: bytes = await self.client.request("GET", self.path + "/screenshot",
                                                expect="bytes")
        return body

    async def move(self, x: int, y: int) -> tuple[int, int]:
        return _cursor(await self.act("mouse_move", coordinate=[x, y]))

    async def click(self, x: int | None = None, y: int | None = None, *,
                    button: Button = "left", count: Literal[1, 2, 3] = 1,
                    modifiers: str | None = None) -> tuple[int, int]:
        """Click at (x, y), or where the pointer is; ``modifiers`` like ``"shift"``."""
        names = {("left", 1): "left_click", ("left", 2): "double_click",
                 ("left", 3): "triple_click", ("right", 1): "right_click",
                 ("middle", 1): "middle_click"}
        name = names.get((button, count))
        if name is None:
            raise ValueError(f"no action for {count} {button} click(s)")
        coordinate = [x, y] if x is not None and y is not None else None
        return _cursor(await self.act(name, coordinate=coordinate, text=modifiers))

    async def double_click(self, x: int | None = None, y: int | None = None) -> tuple[int, int]:
        return await self.click(x, y, count=2)

    async def right_click(self, x: int | None = None, y: int | None = None) -> tuple[int, int]:
        return await self.click(x, y, button="right")

    async def drag(self, start: tuple[int, int], end: tuple[int, int]) -> tuple[int, int]:
        return _cursor(await self.act("left_click_drag", start_coordinate=list(start),
                                      coordinate=list(end)))

    async def scroll(self, x: int, y: int, direction: ScrollDirection = "down",
                     amount: int = 3) -> tuple[int, int]:
        return _cursor(await self.act("scroll", coordinate=[x, y], scroll_direction=direction,
                                      scroll_amount=amount))

    async def type_text(self, text: str) -> None:
        """Type any Unicode text; ``"\\n"`` presses Return."""
        await self.act("type", text=text)

    async def key(self, combo: str) -> None:
        """xdotool-style combos, space-separated for a sequence: ``"ctrl+l"``, ``"Return"``."""
        await self.act("key", text=combo)

    async def hold_key(self, combo: str, duration: float) -> None:
        await self.act("hold_key", text=combo, duration=duration)

    async def wait(self, duration: float) -> None:
        await self.act("wait", duration=duration)

    async def cursor_position(self) -> tuple[int, int]:
        return _cursor(await self.act("cursor_position"))

    # ----------------------------------------------------------- tokens
    async def mint_token(self, kind: Literal["view", "control"] = "view") -> MintedToken:
        """A fresh *kind* token for this session and its viewer URL (API token only)."""
        data = await self.client.request("POST", self.path + "/tokens", json_body={"kind": kind})
        return MintedToken(kind=str(data["kind"]), token=str(data["token"]),
                           token_id=str(data.get("token_id") or token_id(str(data["token"]))),
                           viewer_url=self.client.base_url + str(data["viewer_url"]))

    async def revoke_token(self, token_or_id: str) -> Revocation:
        """Revoke one of this session's view or control tokens at once (API token only):
        later requests with it get 401, its open viewers are closed, control it held goes
        back to the agent. Takes the token itself or its ``token_id``.

        Raises :class:`NotFound` for a token the session does not have (or no longer has)
        and :class:`SessionNotRunning` once the session ended."""
        tid = token_or_id if _TOKEN_ID.fullmatch(token_or_id) else token_id(token_or_id)
        data = await self.client.request("DELETE", f"{self.path}/tokens/{tid}")
        return Revocation(token_id=str(data["token_id"]), kind=str(data["kind"]),
                          closed=int(data.get("closed", 0)),
                          released_control=bool(data.get("released_control")))

    # ---------------------------------------------------------- control
    async def control(self) -> ControlState:
        data = await self.client.request("GET", self.path + "/control")
        return ControlState(data["controller"], data["since"])

    async def take_control(self, token: str | None = None) -> ControlState:
        """``take`` with *token* (a control token; default the API token)."""
        return await self._set_control("take", token)

    async def release_control(self, token: str | None = None) -> ControlState:
        return await self._set_control("release", token)

    async def _set_control(self, action: str, token: str | None) -> ControlState:
        data = await self.client.request("POST", self.path + "/control",
                                         json_body={"action": action}, token=token)
        return ControlState(data["controller"], data["since"])

    async def wait_for_control(self, controller: Controller = "agent", *,
                               timeout: float | None = None) -> ControlState:
        """Return once *controller* holds control (at once if it does now).

        Follows the event stream, so a release is seen as soon as it happens;
        the returned state carries the release event's ``screenshot_url``.
        Raises :class:`TimeoutError` after *timeout* seconds and
        :class:`SessionNotRunning` if the session ends first.
        """
        async with asyncio.timeout(timeout):
            state = await self.control()
            if state.controller == controller:
                return state
            async with contextlib.aclosing(self.events()) as stream:
                async for event in stream:
                    if event.type == "control" and event.data.get("controller") == controller \
                            and event.ts >= state.since:
                        return ControlState(controller, event.ts,
                                            event.data.get("screenshot_url"))
                    if event.type == "status" and \
                            event.data.get("status") in TERMINAL_STATUSES:
                        raise SessionNotRunning(409, {
                            "type": "session-not-running", "title": "Session not running",
                            "detail": f"session {self.session_id} ended while waiting"})
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------- events
    async def events(self, *, last_event_id: int | None = None, reconnect: bool = True,
                     retry_s: float = 1.0) -> AsyncGenerator[Event, None]:
        """Follow the session's events (Server-Sent Events), oldest first.

        Resumes after *last_event_id* (default: from the first event). When the
        stream breaks it reconnects with ``Last-Event-ID`` so no event is lost
        or repeated; it ends after the session's final ``status`` event.
        """
        last = last_event_id or 0
        url = self.client.base_url + self.path + "/events"
        while True:
            headers = self.client._headers()
            if last:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self.client.http.get(
                    url, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                ) as resp:
                    if resp.status >= 400:
                        raise error_from_response(resp.status, await resp.read(), resp.headers)
                    async for event in _parse_sse(resp.content):
                        if event.id <= last:
                            continue
                        last = event.id
                        yield event
                        if event.type == "status" and \
                                event.data.get("status") in TERMINAL_STATUSES:
                            return
            except (aiohttp.ClientError, ConnectionError) as e:
                if not reconnect:
                    raise TransportError(f"event stream of {self.session_id} broke: {e}") from e
                logger.info("session %s: event stream broke (%s); resuming after %d",
                            self.session_id, e, last)
            if not reconnect:
                return
            # The server ends the stream of a finished session once it is replayed.
            with contextlib.suppress(ClientError):
                if (await self.refresh()).get("status") in TERMINAL_STATUSES \
                        and not await self._has_events_after(last):
                    return
            await asyncio.sleep(retry_s)

    async def _has_events_after(self, last: int) -> bool:
        for entry in await self.logs():
            if entry.get("type") != "log" and int(entry.get("id", 0)) > last:
                return True
        return False


def _cursor(result: Mapping[str, Any]) -> tuple[int, int]:
    x, y = result["cursor"]
    return int(x), int(y)


async def _parse_sse(stream: aiohttp.StreamReader) -> AsyncIterator[Event]:
    """Events of a ``text/event-stream`` body (the HTML living standard's rules)."""
    data: list[str] = []
    event_id: str | None = None
    event_type = "message"
    async for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data and event_id is not None:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = {"raw": "\n".join(data)}
                if isinstance(payload, dict):
                    yield Event(int(event_id), str(payload.get("type", event_type)),
                                str(payload.get("ts", "")), payload)
            data, event_id, event_type = [], None, "message"
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "id" and value.isdigit():
            event_id = value
        elif name == "event":
            event_type = value
