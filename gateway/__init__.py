"""Visual Runtime gateway: the one port for the session API, live view and files."""

from .app import create_app
from .client import RemoteSession, VisualRuntimeClient
from .config import GatewayConfig
from .errors import GatewayError, ProblemError

__all__ = ["GatewayConfig", "GatewayError", "ProblemError", "RemoteSession",
           "VisualRuntimeClient", "create_app"]
