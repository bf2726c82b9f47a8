"""Exceptions of the runtime agent.

Hierarchy::

    AgentSideError
    └── InjectorError        the X server refused or lost the injection connection

(and each component's own subclass: CaptureError, EncoderError, MediaError,
OfferError, RecorderError, VncError, ...). Errors of the shared wire format
(malformed messages, invalid actions, unknown keys) are :mod:`wire.errors`.
"""

from __future__ import annotations

__all__ = ["AgentSideError", "InjectorError"]


class AgentSideError(Exception):
    """Base class of every error raised by ``agent_side``."""


class InjectorError(AgentSideError):
    """Input could not be injected (X connection lost, extension missing, ...)."""
