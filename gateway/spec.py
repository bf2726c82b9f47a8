"""What a session is asked to be: the creator's request, validated at the HTTP edge.

A value object shared by the session manager, the store and the backends (which
turn it into a pod), so it sits below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SessionSpec"]


@dataclass(frozen=True)
class SessionSpec:
    """What the creator asked for; validated at the HTTP edge."""

    resolution: tuple[int, int] = (1600, 900)
    timeout_minutes: int = 60
    idle_timeout_minutes: int = 15
    enable_recording: bool = True
    enable_file_transfer: bool = True
    network: str = "egress"
    start_url: str | None = None
    agent_resolution: tuple[int, int] | None = None
    """Size of the picture the agent sees and points in (``None``: the resolution)."""

    @property
    def resolution_str(self) -> str:
        return f"{self.resolution[0]}x{self.resolution[1]}"

    @property
    def agent_resolution_str(self) -> str | None:
        if self.agent_resolution is None:
            return None
        return f"{self.agent_resolution[0]}x{self.agent_resolution[1]}"
