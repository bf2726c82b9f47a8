"""The runtime agent's HTTP interface, as the gateway calls it.

One runtime agent per session serves these routes on its unix socket; only the
gateway connects there. Token checks happen at the gateway, which tells the agent
who is asking with two headers, so the agent can apply the control rules itself
(a view token never injects input, a control token only while it holds control).
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

__all__ = [
    "ACTIONS", "BROADCAST", "CDP", "CLAIM", "CDP_CONNECTION_HEADER", "CDP_SUMMARY", "CDP_TARGETS",
    "CDP_VERSION", "CONTROL", "HEALTH", "PEER_ID_HEADER", "SCREENSHOT", "STATS",
    "STREAM", "TOKEN_ID_HEADER", "TOKEN_KIND_HEADER", "VNC", "WHEP", "TokenKind", "whep_peer",
]

TokenKind: TypeAlias = Literal["view", "control", "api"]

HEALTH: Final = "/health"
"""GET: 200 ``{"first_frame": bool, ...}`` once the agent serves."""
STATS: Final = "/stats"
"""GET: JSON counters (viewers, frames, input drops, encoder state)."""
WHEP: Final = "/whep"
"""POST ``application/sdp`` offer -> 201 answer, the new peer's id in :data:`PEER_ID_HEADER`."""
SCREENSHOT: Final = "/screenshot"
"""GET: ``image/png`` of the screen."""
CONTROL: Final = "/control"
"""POST ``{"controller": "agent"|"human", "owner": token id | null}``."""
BROADCAST: Final = "/broadcast"
"""POST: a JSON event sent to every viewer's data channel and WebSocket."""
ACTIONS: Final = "/actions"
"""POST a computer-use action (:mod:`wire.actions`) -> its JSON result."""
STREAM: Final = "/stream"
"""GET WebSocket: H.264 access units for WebCodecs plus viewer input."""
VNC: Final = "/vnc"
"""GET WebSocket: RFB to x11vnc, input filtered by token kind and control."""
CDP: Final = "/cdp"
"""GET WebSocket: the session's Chromium DevTools (API or control token; one client at a
time; ``?on_human=hold|refuse&hold_timeout=S``). 403 view token, 409 busy, 503 + retry."""
CDP_VERSION: Final = "/cdp/version"
"""GET: ``/json/version`` fields of the browser (without ``webSocketDebuggerUrl``)."""
CDP_TARGETS: Final = "/cdp/targets"
"""GET: the browser's targets, ``/json/list`` style (informational)."""
CDP_SUMMARY: Final = "/cdp/summary"
"""GET ``/cdp/summary/{connection}``: a finished connection's summary (waits for its end)."""

TOKEN_KIND_HEADER: Final = "X-VR-Token-Kind"
"""Who is asking: ``view``, ``control`` or ``api`` (:data:`TokenKind`)."""
TOKEN_ID_HEADER: Final = "X-VR-Token-Id"
"""A stable hash of the token, so control ownership survives reconnects."""
CLAIM: Final = "/claim"
"""POST ``{"resolution": "WxH", "start_url": str | null, "recording": bool}`` to a pooled
agent (``--pooled``): apply the session's settings and start serving it (warm pool)."""
CDP_CONNECTION_HEADER: Final = "X-VR-CDP-Connection"
"""Set by the gateway on ``/cdp``: the connection id its summary is filed under."""
PEER_ID_HEADER: Final = "X-VR-Peer-Id"
"""Set by the agent on a WHEP answer: the id of the new peer."""

VIEWER_LIMITS: Final = ("max_viewers", "max_viewers_per_token", "max_webrtc", "max_ws", "max_vnc",
                        "offers_per_minute", "session_offers_per_minute",
                        "datachannel_max_bytes", "ice_deadline_s")
"""Viewer caps of a runtime agent (``agent_side.limits.ViewerLimits``); each is the agent
flag ``--NAME`` with ``_`` as ``-`` (``ice_deadline_s``: ``--ice-deadline``)."""
BITRATE_POLICIES: Final = ("steering", "min")
"""Whose bandwidth estimates set a session's shared encoder bitrate (the agent's
``--bitrate-policy``; ``agent_side.fanout``): ``steering`` (the default) or ``min``."""
VIEWER_LIMIT_ERROR: Final = "viewer_limit"
"""``error`` of the agent's 429/503 answer to a viewer over a cap (with ``reason`` and
``Retry-After``)."""


def viewer_limit_flag(name: str) -> str:
    """The runtime agent's flag for the viewer cap *name* (:data:`VIEWER_LIMITS`)."""
    return "--ice-deadline" if name == "ice_deadline_s" else "--" + name.replace("_", "-")


def whep_peer(peer_id: str) -> str:
    """DELETE: close one WHEP peer."""
    return f"{WHEP}/{peer_id}"
