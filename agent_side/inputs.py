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
from dataclasses import dataclass
from typing import Literal

from .control import InputGate, NotInControl
from .errors import AgentSideError, ProtocolError
from .injector import InputInjector
from .protocol import (
    Clipboard,
    InputMessage,
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

__all__ = ["InputHandler", "InputOutcome", "TokenKind", "apply_input"]

logger = logging.getLogger(__name__)

TokenKind = Literal["view", "control", "api"]


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
        self.messages_dropped = 0
        """Malformed messages over all transports."""

    async def handle(self, raw: str | bytes, token_kind: TokenKind, token_id: str,
                     viewer: str) -> InputOutcome:
        """Apply one raw message from *viewer* (a name for logs) if the rules allow it."""
        try:
            message = parse_input_message(raw)
        except ProtocolError as e:
            self.messages_dropped += 1
            logger.debug("session %s: viewer %s: bad input message: %s", self._session_id,
                         viewer, e)
            return InputOutcome(error_message("bad_message", str(e)), dropped=True)
        if token_kind == "view":
            return InputOutcome(error_message("not_in_control", "a view token cannot send input"))
        try:
            await self._gate.run_human(token_id, lambda: apply_input(self._injector, message))
        except NotInControl as e:
            return InputOutcome(error_message("not_in_control", str(e)))
        except AgentSideError as e:
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
