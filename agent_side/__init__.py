"""Visual Runtime runtime agent: capture, encode once, stream, inject input.

Run one per session with ``python -m agent_side``; the gateway talks to it
over a unix socket.
"""

from .errors import AgentSideError

__all__ = ["AgentSideError"]
