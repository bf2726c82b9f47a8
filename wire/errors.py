"""Errors of the shared wire format.

Hierarchy::

    WireError
    ├── ProtocolError        malformed data-channel message (dropped by the caller)
    ├── ActionError          invalid computer-use action (the gateway answers 422)
    └── UnknownKeyError      unknown key or combo name (also a ``ValueError``)
"""

from __future__ import annotations

__all__ = ["ActionError", "ProtocolError", "UnknownKeyError", "WireError"]


class WireError(Exception):
    """Base class of every error raised by ``wire``."""


class ProtocolError(WireError):
    """A data-channel message that does not follow the wire format."""


class UnknownKeyError(WireError, ValueError):
    """A key name (DOM ``KeyboardEvent.key`` or xdotool style) that we cannot map."""

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message or f"unknown key name {name!r}")


class ActionError(WireError):
    """A computer-use action that failed validation.

    ``field`` names the offending request field (``"action"``, ``"coordinate"``,
    ...) so the gateway can build ``errors: [{"field", "message"}]``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
