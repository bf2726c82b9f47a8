"""The runtime agent's one connection to the session's Chromium DevTools.

Chromium speaks CDP on a pipe to ``cdp-relay.py`` in the app sandbox
(``container/cdp-relay.py``), which relays whole frames -- one JSON message
each, ended by a NUL byte -- to a unix socket only this agent may connect to.
:class:`BrowserLink` is that connection: it reads the relay's hello, numbers
every command it sends with ids of its own (so the proxy's own requests and a
client's never collide), routes each reply to whoever sent the command and
every event to one event callback.

Errors: :class:`BrowserUnavailable` (no relay, Chromium restarting, the link
went away; it carries the reason and a retry delay), a subclass of
:class:`~agent_side.errors.AgentSideError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import AgentSideError

__all__ = ["BrowserLink", "BrowserUnavailable", "Reply"]

logger = logging.getLogger(__name__)

MAX_FRAME = 64 * 1024 * 1024
"""Largest frame read from the browser (a full-page screenshot in base64 fits)."""
HELLO_TIMEOUT_S = 5.0

Reply = Callable[[int, bytes, dict[str, Any] | None], None]
"""Called with the link's id of the command, the reply frame (its id already set
back to the caller's) and, for replies the caller asked to see parsed, the
parsed message."""


class BrowserUnavailable(AgentSideError):
    """The session's Chromium cannot be reached now."""

    def __init__(self, reason: str, retry_after: int = 2) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def with_id(frame: bytes, new_id: int) -> bytes:
    """*frame* (a reply, ``{"id":N,...}``) with its id replaced by *new_id*."""
    if frame.startswith(b'{"id":'):
        comma = frame.find(b",", 6, 32)
        if comma > 0 and frame[6:comma].isdigit():
            return b'{"id":' + str(new_id).encode() + frame[comma:]
    message = json.loads(frame)
    message["id"] = new_id
    return json.dumps(message, separators=(",", ":")).encode()


class BrowserLink:
    """One connection to the relay; ``connect`` again after it is lost."""

    def __init__(self, socket_path: Path, session_id: str = "") -> None:
        self._path = socket_path
        self._sid = session_id
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_id = 1
        self._pending: dict[int, tuple[int, Reply, bool]] = {}
        self._lost: list[Callable[[str], None]] = []
        self.on_event: Callable[[bytes], None] | None = None
        self.generation = 0
        """Chromium's generation (1 for the first start, +1 per restart) as the relay said."""
        self.lost_reason = ""
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and self._task is not None and not self._task.done()

    async def connect(self) -> None:
        """Connect unless connected; BrowserUnavailable when Chromium cannot be reached."""
        async with self._lock:
            if self.connected:
                return
            try:
                reader, writer = await asyncio.open_unix_connection(str(self._path),
                                                                    limit=MAX_FRAME)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise BrowserUnavailable(
                    "the session's Chromium is not running (its DevTools relay is not listening)"
                ) from e
            except OSError as e:
                raise BrowserUnavailable(f"cannot reach the DevTools relay: {e.strerror}") from e
            try:
                hello = json.loads((await asyncio.wait_for(
                    reader.readuntil(b"\0"), HELLO_TIMEOUT_S))[:-1])["relay"]
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError, KeyError, TypeError, OSError) as e:
                writer.close()
                raise BrowserUnavailable("the DevTools relay did not answer") from e
            if hello.get("state") != "ready":
                writer.close()
                if hello.get("state") == "busy":
                    raise BrowserUnavailable("the DevTools relay is busy with another client")
                reason = str(hello.get("reason") or "Chromium is not running")
                raise BrowserUnavailable(f"the session's Chromium is restarting ({reason})",
                                         int(hello.get("retry_after") or 2))
            self._reader, self._writer = reader, writer
            self.generation = int(hello.get("generation") or 0)
            self.lost_reason = ""
            self._task = asyncio.create_task(self._read_loop(), name=f"cdp-link-{self._sid}")
            logger.info("session %s: DevTools link up (Chromium pid %s, generation %d)",
                        self._sid, hello.get("pid"), self.generation)

    def on_lost(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call *callback(reason)* when the link goes; returns a function that unsubscribes."""
        self._lost.append(callback)
        return lambda: self._lost.remove(callback) if callback in self._lost else None

    def send(self, message: dict[str, Any], reply: Reply, *, parse: bool = False,
             caller_id: int = 0) -> int:
        """Send *message* (its ``id`` is set here); *reply* gets the answer with
        *caller_id* as its id. Returns the link's id for the command."""
        if self._writer is None or not self.connected:
            raise BrowserUnavailable(self.lost_reason or "the DevTools link is down")
        link_id = self._next_id
        self._next_id += 1
        message = {**message, "id": link_id}
        self._pending[link_id] = (caller_id, reply, parse)
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\0")
        return link_id

    def forget(self, link_ids: set[int]) -> None:
        """Drop the routes of commands whose sender went away (late replies are discarded)."""
        for link_id in link_ids:
            self._pending.pop(link_id, None)

    async def call(self, method: str, params: dict[str, Any] | None = None, *,
                   session_id: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """One command of the agent's own; its parsed ``result`` (or an AgentSideError)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, Any]] = loop.create_future()

        def reply(_link_id: int, _frame: bytes, message: dict[str, Any] | None) -> None:
            if not done.done():
                done.set_result(message or {})

        message: dict[str, Any] = {"method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        link_id = self.send(message, reply, parse=True)

        def on_lost(reason: str) -> None:
            if not done.done():
                done.set_exception(BrowserUnavailable(reason))

        lost = self.on_lost(on_lost)
        try:
            answer = await asyncio.wait_for(done, timeout)
        except TimeoutError as e:
            self._pending.pop(link_id, None)
            raise AgentSideError(f"{method}: Chromium did not answer within {timeout:g} s") from e
        finally:
            lost()
        if "error" in answer:
            raise AgentSideError(f"{method}: {answer['error'].get('message', 'failed')}")
        result = answer.get("result", {})
        return result if isinstance(result, dict) else {}

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "the session's Chromium exited; it is restarting"
        try:
            while True:
                frame = (await self._reader.readuntil(b"\0"))[:-1]
                self._dispatch(frame)
        except asyncio.IncompleteReadError:
            pass
        except asyncio.LimitOverrunError:
            reason = "Chromium sent a message larger than the agent accepts; the link was reset"
            logger.warning("session %s: %s", self._sid, reason)
        except OSError as e:
            reason = f"the DevTools link failed: {e.strerror}"
        finally:
            self._close(reason)

    def _dispatch(self, frame: bytes) -> None:
        if frame.startswith(b'{"id":'):
            comma = frame.find(b",", 6, 32)
            try:
                link_id = int(frame[6:comma]) if comma > 0 else int(json.loads(frame)["id"])
            except (ValueError, KeyError, TypeError):
                logger.debug("session %s: unreadable reply from Chromium dropped", self._sid)
                return
            route = self._pending.pop(link_id, None)
            if route is None:
                return  # its sender went away
            caller_id, reply, parse = route
            try:
                reply(link_id, with_id(frame, caller_id), json.loads(frame) if parse else None)
            except ValueError:
                logger.debug("session %s: unreadable reply from Chromium dropped", self._sid)
            return
        if self.on_event is not None:
            self.on_event(frame)

    def _close(self, reason: str) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None
        self.lost_reason = reason
        self._pending.clear()
        logger.info("session %s: DevTools link down: %s", self._sid, reason)
        for callback in list(self._lost):
            callback(reason)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writer is not None:
            self._close("the runtime agent is stopping")
