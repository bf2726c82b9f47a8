"""Visual Runtime gateway: the one port for the session API, live view and files.

Sub-packages, from the bottom up (each may import only those listed before it,
plus ``wire``; never ``agent_side``)::

    gateway.config, gateway.errors, gateway.appkeys   settings, problem errors, app keys
    gateway.backends    where pods run (local bubblewrap, docker)
    gateway.sessions    lifecycle: manager, store, state, events, slots, tokens, agent link
    gateway.security    auth, throttle, origin, CSP, the hardening middleware
    gateway.media       recordings, retention, the shared folder
    gateway.http        API routes, viewer page, metrics, OpenAPI, request schemas
    gateway.app         create_app(config): the one wiring place of the server
    gateway.cli         the ``visual-runtime`` command: serve, client commands, doctor, demo

The agent-host client library is the separate package ``visual_runtime_client``.
``tests/test_layers.py`` checks the rule.
"""

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, ProblemError

__all__ = ["GatewayConfig", "GatewayError", "ProblemError", "create_app"]
