"""Exceptions of the runtime agent.

Hierarchy::

    AgentSideError
    ├── ProtocolError        malformed data-channel message (dropped by the caller)
    ├── ActionError          invalid computer-use action (the gateway answers 422)
    ├── UnknownKeyError      unknown key or combo name (also a ``ValueError``)
    └── InjectorError        the X server refused or lost the injection connection
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "AgentSideError",
    "InjectorError",
    "ProtocolError",
    "UnknownKeyError",
]


class AgentSideError(Exception):
    """Base class of every error raised by ``agent_side``."""


class ProtocolError(AgentSideError):
    """A data-channel message that does not follow the wire format."""


class UnknownKeyError(AgentSideError, ValueError):
    """A key name (DOM ``KeyboardEvent.key`` or xdotool style) that we cannot map."""

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message or f"unknown key name {name!r}")


class ActionError(AgentSideError):
    """A computer-use action that failed validation.

    ``field`` names the offending request field (``"action"``, ``"coordinate"``,
    ...) so the gateway can build ``errors: [{"field", "message"}]``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class InjectorError(AgentSideError):
    """Input could not be injected (X connection lost, extension missing, ...)."""
