"""An async Python client of the Visual Runtime API, for agent hosts.

Needs only aiohttp: it imports nothing from the gateway or the runtime agent, so
an agent host installs and imports it without the server's dependencies.
See docs/client.md.
"""

from visual_runtime_client.client import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    ControlState,
    Event,
    FieldError,
    Forbidden,
    HumanInControl,
    NotFound,
    PayloadTooLarge,
    RemoteSession,
    SessionNotRunning,
    TransportError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationError,
    VisualRuntimeClient,
)

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
    "NotFound",
    "PayloadTooLarge",
    "RemoteSession",
    "SessionNotRunning",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "VisualRuntimeClient",
]
