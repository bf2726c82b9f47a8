"""Which CDP commands a client may send, and which wait for the agent to hold control.

The session's browser is shared between the agent host (driving it over CDP)
and the humans watching, one of whom may take control. Commands fall into
four classes:

* **refused**, always: commands that would end the session's browser
  (``Browser.close``, ``Browser.crash*``), take input away from the human
  (``Input.setIgnoreInputEvents``), open a TCP listener or outbound DevTools
  connections (``Tethering.*``, ``Target.setRemoteLocations``) or give page
  scripts the protocol (``Target.exposeDevToolsProtocol``);
* **input**: commands that act like a user -- ``Input.*``, navigation
  (``Page.navigate``, ``Page.reload``, history), tabs (``Target.createTarget``,
  ``closeTarget``, ``activateTarget``, ``Page.bringToFront``, ``Page.close``),
  dialogs and file choosers. While a human holds control they are held until
  release (or refused, per connection, see ``cdp.py``);
* **gesture**: ``Runtime.evaluate`` / ``Runtime.callFunctionOn`` asking for
  ``userGesture``. While a human holds control they run *without* the user
  gesture: Playwright sets ``userGesture: true`` on every evaluation,
  including the reads it makes to find elements, so holding them would stall
  a script's reads as well;
* everything else (DOM and page reads, screenshots, network and target
  bookkeeping) goes on at any time.

A method name must look like ``Domain.method``; other names are refused
before they reach the browser.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["CommandClass", "Command", "classify", "parse_command", "BadCommand"]

METHOD = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}\.[a-z][A-Za-z0-9]{0,95}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_ID = 2**53 - 1


class CommandClass(enum.Enum):
    REFUSED = "refused"
    INPUT = "input"
    GESTURE = "gesture"
    READ = "read"


REFUSED_METHODS = frozenset({
    "Browser.close", "Browser.crash", "Browser.crashGpuProcess",
    "Input.setIgnoreInputEvents",
    "Target.exposeDevToolsProtocol", "Target.setRemoteLocations",
})
REFUSED_DOMAINS = frozenset({"Tethering"})
INPUT_METHODS = frozenset({
    "Page.navigate", "Page.reload", "Page.navigateToHistoryEntry", "Page.resetNavigationHistory",
    "Page.close", "Page.bringToFront", "Page.handleJavaScriptDialog",
    "Target.createTarget", "Target.closeTarget", "Target.activateTarget",
    "DOM.setFileInputFiles", "Page.handleFileChooser",
})
INPUT_DOMAINS = frozenset({"Input"})
GESTURE_METHODS = frozenset({"Runtime.evaluate", "Runtime.callFunctionOn"})


class BadCommand(ValueError):
    """A client message that is not a CDP command; ``msg_id`` is set when it had a usable id."""

    def __init__(self, reason: str, msg_id: int | None = None, *, unknown: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.msg_id = msg_id
        self.unknown = unknown


@dataclass(frozen=True)
class Command:
    """A well-formed CDP command from a client."""

    id: int
    method: str
    params: dict[str, Any]
    session_id: str | None

    @property
    def domain(self) -> str:
        return self.method.split(".", 1)[0]

    def to_message(self, *, strip_gesture: bool = False) -> dict[str, Any]:
        params = self.params
        if strip_gesture and params.get("userGesture"):
            params = {**params, "userGesture": False}
        message: dict[str, Any] = {"method": self.method, "params": params}
        if self.session_id is not None:
            message["sessionId"] = self.session_id
        return message


def parse_command(message: object) -> Command:
    """Validate one decoded client message; BadCommand when it is not a command."""
    if not isinstance(message, dict):
        raise BadCommand("a command is a JSON object")
    msg_id = message.get("id")
    if isinstance(msg_id, bool) or not isinstance(msg_id, int) or not 0 <= msg_id <= MAX_ID:
        raise BadCommand("'id' must be a non-negative integer")
    method = message.get("method")
    if not isinstance(method, str):
        raise BadCommand("'method' must be a string", msg_id)
    if not METHOD.match(method):
        raise BadCommand(f"'{method[:100]}' wasn't found", msg_id, unknown=True)
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadCommand("'params' must be an object", msg_id)
    session_id = message.get("sessionId")
    if session_id is not None and (not isinstance(session_id, str)
                                   or not SESSION_ID.match(session_id)):
        raise BadCommand("'sessionId' must be a session id string", msg_id)
    return Command(msg_id, method, params, session_id)


def classify(command: Command) -> CommandClass:
    if command.method in REFUSED_METHODS or command.domain in REFUSED_DOMAINS:
        return CommandClass.REFUSED
    if command.method in INPUT_METHODS or command.domain in INPUT_DOMAINS:
        return CommandClass.INPUT
    if command.method in GESTURE_METHODS and command.params.get("userGesture"):
        return CommandClass.GESTURE
    return CommandClass.READ
