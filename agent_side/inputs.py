"""Viewer input, whatever carried it: the rules shared by every transport.

A viewer's input message (API.md "Live view", the JSON of the ``input`` data
channel) arrives over WebRTC (:mod:`agent_side.peers`) or over the stream
WebSocket (:mod:`agent_side.wsstream`). :class:`InputHandler` parses it,
checks the control rules through the :class:`~agent_side.control.InputGate`
and injects it; the caller sends the returned reply (if any) back on its own
channel. Malformed messages are dropped, counted and logged at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal

from wire.datachannel import (
    DROP_REASONS,
    Clipboard,
    InputMessage,
    InputRejected,
    KeyDown,
    KeyUp,
    MouseDown,
    MouseMove,
    MouseUp,
    Scroll,
    Text,
    error_message,
    parse_input_message,
)
from wire.errors import ProtocolError, WireError

from .control import InputGate, NotInControl
from .errors import AgentSideError
from .injector import InputInjector

__all__ = ["InputHandler", "InputOutcome", "RateLimiter", "TokenKind", "apply_input"]

logger = logging.getLogger(__name__)

TokenKind = Literal["view", "control", "api"]

MESSAGES_PER_S: Final = 500.0
"""Sustained input messages per second one viewer may send (a human at 240 Hz pointer
motion plus typing stays far below); the excess is dropped as ``rate_limited``."""
BURST: Final = 1000.0
"""Messages a viewer may send at once above the sustained rate."""


@dataclass
class RateLimiter:
    """A token bucket for one viewer's input messages."""

    rate: float = MESSAGES_PER_S
    burst: float = BURST
    _tokens: float = field(default=BURST, init=False)
    _at: float = field(default_factory=time.monotonic, init=False)

    def __post_init__(self) -> None:
        self._tokens = self.burst

    def take(self, now: float | None = None) -> bool:
        """Spend one token; False when the viewer is over its rate."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(frozen=True)
class InputOutcome:
    """What became of one message."""

    reply: str | None
    """Server -> client JSON text to send back (an error), or None."""
    dropped: bool = False
    """True when the message was malformed."""


def apply_input(injector: InputInjector, message: InputMessage) -> None:
    """Inject one parsed message (call in the gate's input thread)."""
    match message:
        case MouseMove(x=x, y=y):
            injector.mouse_move(x, y)
        case MouseDown(button=button):
            injector.button_down(button)
        case MouseUp(button=button):
            injector.button_up(button)
        case Scroll(x=x, y=y, dx=dx, dy=dy):
            injector.scroll(x, y, dx, dy)
        case KeyDown(key=key):
            injector.key_down(key)
        case KeyUp(key=key):
            injector.key_up(key)
        case Text(text=text):
            injector.type_text(text)
        case Clipboard(text=text):
            injector.set_clipboard(text)


class InputHandler:
    """Parses, authorises and injects viewer input for one session."""

    def __init__(self, gate: InputGate, injector: InputInjector, session_id: str = "") -> None:
        self._gate = gate
        self._injector = injector
        self._session_id = session_id
        self.dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        """Dropped messages over all transports, by reason (:data:`DROP_REASONS`)."""
        self._rate_limit_logged = 0.0

    @property
    def messages_dropped(self) -> int:
        """Dropped messages over all transports (every reason)."""
        return sum(self.dropped.values())

    def admit(self, limiter: RateLimiter | None, viewer: str) -> bool:
        """Whether a message from *viewer* is within its rate (counts it if not).
        Cheap and synchronous, so a flood is shed before any task is created."""
        if limiter is None or limiter.take():
            return True
        self.dropped["rate_limited"] += 1
        now = time.monotonic()
        if now - self._rate_limit_logged > 5.0:
            self._rate_limit_logged = now
            logger.info("session %s: viewer %s is over %d input messages/s; dropping",
                        self._session_id, viewer, MESSAGES_PER_S)
        return False

    async def handle(self, raw: str | bytes, token_kind: TokenKind, token_id: str,
                     viewer: str, limiter: RateLimiter | None = None) -> InputOutcome:
        """Apply one raw message from *viewer* (a name for logs) if the rules allow it.

        With a *limiter*, a message over the viewer's rate is dropped silently
        (no reply: answering a flood would double it)."""
        if not self.admit(limiter, viewer):
            return InputOutcome(None, dropped=True)
        try:
            message = parse_input_message(raw)
        except ProtocolError as e:
            reason = e.reason if isinstance(e, InputRejected) else "bad_field"
            self.dropped[reason] += 1
            logger.debug("session %s: viewer %s: bad input message (%s): %s",
                         self._session_id, viewer, reason, e)
            return InputOutcome(error_message("bad_message", str(e)), dropped=True)
        if token_kind == "view":
            return InputOutcome(error_message("not_in_control", "a view token cannot send input"))
        try:
            await self._gate.run_human(token_id, lambda: apply_input(self._injector, message))
        except NotInControl as e:
            return InputOutcome(error_message("not_in_control", str(e)))
        except (AgentSideError, WireError) as e:
            logger.debug("session %s: viewer %s: input failed: %s", self._session_id, viewer, e)
            return InputOutcome(error_message("input_failed", str(e)))
        return InputOutcome(None)

    @property
    def controller(self) -> Literal["agent", "human"]:
        return self._gate.controller

    async def release_for(self, token_id: str) -> None:
        """A viewer went away: release what its token may have left pressed."""
        await self._gate.release_for(token_id)

    def may_inject(self, token_kind: TokenKind, token_id: str) -> bool:
        """Whether input from this token would be applied right now (no side effects)."""
        return (token_kind != "view" and self._gate.controller == "human"
                and self._gate.owner == token_id)
