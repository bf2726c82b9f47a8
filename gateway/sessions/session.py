"""The session record and its lifecycle state machine.

::

    starting ──► running ──► stopping ──► stopped | expired | failed
        │                        ▲
        └────────────────────────┘   (a start that fails or is stopped early)

Terminal states stay terminal; every transition is checked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.errors import GatewayError
from gateway.spec import SessionSpec


class SessionStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def live(self) -> bool:
        return self in (SessionStatus.STARTING, SessionStatus.RUNNING)


TERMINAL = frozenset({SessionStatus.STOPPED, SessionStatus.EXPIRED, SessionStatus.FAILED})

_ALLOWED: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.STARTING: frozenset({SessionStatus.RUNNING, SessionStatus.STOPPING}),
    SessionStatus.RUNNING: frozenset({SessionStatus.STOPPING}),
    SessionStatus.STOPPING: TERMINAL,
    SessionStatus.STOPPED: frozenset(),
    SessionStatus.EXPIRED: frozenset(),
    SessionStatus.FAILED: frozenset(),
}


class StopReason(enum.StrEnum):
    REQUESTED = "requested"
    TIMEOUT = "timeout"
    IDLE_TIMEOUT = "idle_timeout"
    ERROR = "error"
    SHUTDOWN = "shutdown"

    @property
    def final_status(self) -> SessionStatus:
        if self in (StopReason.TIMEOUT, StopReason.IDLE_TIMEOUT):
            return SessionStatus.EXPIRED
        if self is StopReason.ERROR:
            return SessionStatus.FAILED
        return SessionStatus.STOPPED


class Controller(enum.StrEnum):
    AGENT = "agent"
    HUMAN = "human"


class TransitionError(GatewayError):
    """An illegal status change was attempted."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Session:
    """One session; mutated only by the session manager."""

    session_id: str
    spec: SessionSpec
    backend: str
    created_at: datetime
    view_token_hash: str
    control_token_hash: str
    slot: int
    status: SessionStatus = SessionStatus.STARTING
    stop_reason: StopReason | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    controller: Controller = Controller.AGENT
    controller_since: datetime = field(default_factory=utcnow)
    controller_token_hash: str | None = None
    """Hash of the token that took control (control belongs to the token)."""
    issued_tokens: dict[str, str] = field(default_factory=dict)
    """Hashes of tokens minted after creation (``POST .../tokens``) -> ``view``/``control``."""
    revoked_tokens: set[str] = field(default_factory=set)
    """Hashes of this session's tokens revoked before its end (``DELETE .../tokens/{id}``)."""
    last_activity: datetime = field(default_factory=utcnow)
    """Last agent action or human input, for the idle timeout."""
    viewers: int = 0
    error: str | None = None
    minute_s: float = 60.0
    """Seconds per timeout minute (60 except in tests)."""
    pod: dict[str, object] = field(default_factory=dict)
    """Backend-specific handle of the pod (pids, paths), persisted for re-adoption."""
    from_pool: bool = False
    """The pod was claimed from the warm pool (``gateway.sessions.pool``)."""

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(seconds=self.spec.timeout_minutes * self.minute_s)

    def idle_deadline(self) -> datetime | None:
        if self.spec.idle_timeout_minutes == 0:
            return None
        return self.last_activity + timedelta(seconds=self.spec.idle_timeout_minutes * self.minute_s)

    def transition(self, new: SessionStatus) -> None:
        if new not in _ALLOWED[self.status]:
            raise TransitionError(f"session {self.session_id}: {self.status} -> {new} is not allowed")
        self.status = new
        if new is SessionStatus.RUNNING:
            self.started_at = utcnow()
        if new.terminal:
            self.ended_at = utcnow()

    def to_public(self) -> dict[str, object]:
        sid = self.session_id
        return {
            "session_id": sid,
            "status": self.status.value,
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "backend": self.backend,
            "resolution": self.spec.resolution_str,
            "agent_resolution": self.spec.agent_resolution_str,
            "timeout_minutes": self.spec.timeout_minutes,
            "idle_timeout_minutes": self.spec.idle_timeout_minutes,
            "enable_recording": self.spec.enable_recording,
            "enable_file_transfer": self.spec.enable_file_transfer,
            "network": self.spec.network,
            "start_url": self.spec.start_url,
            "from_pool": self.from_pool,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "expires_at": rfc3339(self.expires_at),
            "ended_at": rfc3339(self.ended_at),
            "controller": self.controller.value,
            "viewers": self.viewers,
            "urls": {
                "viewer": f"/sessions/{sid}/",
                "vnc": f"/sessions/{sid}/vnc/",
                "whep": f"/api/visual-sessions/{sid}/whep",
                "events": f"/api/visual-sessions/{sid}/events",
                "recording": f"/api/visual-sessions/{sid}/recording",
            },
            "error": self.error,
        }
