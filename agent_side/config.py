"""Runtime agent configuration, built once in ``__main__`` from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .limits import ViewerLimits
from .remote import RemoteListener


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one session's runtime agent."""

    socket: Path
    """Unix socket the HTTP API listens on (the gateway's only way in)."""
    display: str
    """X display of the app sandbox, e.g. ``":0"``."""
    width: int
    """Screen width in pixels (even)."""
    height: int
    """Screen height in pixels (even)."""
    session_id: str = ""
    """Session id, for log lines."""
    fps: int = 60
    """Capture/encode frame-rate cap; the video governor lowers it under load."""
    keyframe_interval_s: float = 3.0
    """Periodic keyframe interval."""
    bitrate_policy: str = "steering"
    """Whose bandwidth estimates (REMB) set the shared encoder's cap: ``steering`` (peers
    whose token may take control; view-only peers are paced) or ``min`` (every peer)."""
    input: str = "xtest"
    """Input injector: ``xtest`` or ``null``."""
    recording: Path | None = None
    """Folder to record the session into (None: no recording)."""
    recording_keyframe_interval_s: float = 2.0
    """Longest keyframe interval while recording (fine-grained seeking)."""
    recording_min_free_mb: int = 256
    """Recording stops when its file system has less free space than this."""
    limits: ViewerLimits = field(default_factory=ViewerLimits)
    """Caps on viewers, offers and data-channel messages (:mod:`agent_side.limits`)."""
    cdp_socket: Path | None = None
    """The DevTools relay's socket (``container/cdp-relay.py``); None: no ``/cdp``."""
    listen: RemoteListener | None = None
    """Also serve the API over TCP (TLS, the session's secret) for a gateway on
    another machine (:mod:`agent_side.remote`); None: the unix socket only."""
    mirror: tuple[tuple[str, Path], ...] = ()
    """Folders served to the gateway for copying (kind, folder): :mod:`agent_side.mirror`."""
    pooled: bool = False
    """Wait warm for a claim (``agent_side.pooled``); width/height are the largest size."""
    x11vnc_own_netns: bool = False
    """Run x11vnc in a network namespace of its own: set where the agent shares the host's
    (local backend), so x11vnc cannot reach another X server's abstract socket."""

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"resolution must be positive and even: {self.width}x{self.height}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps must be 1-120, not {self.fps}")
