"""The session backend interface: start, watch and stop a session's pod.

A pod is the app sandbox (Xvfb, fluxbox, xterm, Chromium) plus the runtime
agent beside it (ARCHITECTURE.md). The gateway talks to the runtime agent over
a unix socket whose host path the backend reports.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from gateway.spec import SessionSpec
from wire.agent_api import viewer_limit_flag

from ..config import GatewayConfig
from ..errors import BackendError
from .remote import AgentEndpoint
from .xauth import secure_x11_dir, write_xauthority

logger = logging.getLogger(__name__)

PodHandle = dict[str, Any]
"""Backend-specific, JSON-serialisable description of a live pod (pids, names)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


async def start_step(fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Run one blocking step of a pod's start in a worker thread.

    Unlike a bare ``asyncio.to_thread``, a cancellation (the session stopped
    while starting) waits for the thread's call to end before it propagates. The
    clean-up that follows then sees everything the step made: a process spawned,
    a container run or a disk mounted after the clean-up had looked would leak.
    """
    step = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        await asyncio.wait({step})
        if not step.cancelled() and step.exception() is not None:
            logger.info("a start step ended in %r after the start was cancelled",
                        step.exception())
        raise


@dataclass(frozen=True)
class PodRequest:
    """What a backend needs to start one pod."""

    session_id: str
    spec: SessionSpec
    slot: int
    """Small integer unique among live sessions (uids, subnets)."""
    session_dir: Path
    """Host folder of the session: home/ (with the shared folder), logs/, recordings."""
    runtime_dir: Path
    """Short host folder for sockets (unix socket paths are limited to 108 bytes)."""
    pooled: bool = False
    """A warm-pool pod (``gateway.sessions.pool``): *spec* gives the largest resolution
    and the recording folder; the runtime agent waits for a claim (``--pooled``)."""


class SessionBackend(abc.ABC):
    """Starts, inspects and stops pods. Every method is safe to call repeatedly."""

    name: str
    network_at_claim: bool = False
    """True when a pooled pod's network mode is set at claim (else it is part of the
    pool key)."""

    @abc.abstractmethod
    async def start_pod(self, request: PodRequest) -> PodHandle:
        """Start the pod and return its handle as soon as its processes exist.

        Raises BackendError when it cannot be started; whatever was created is
        cleaned up before raising.
        """

    @abc.abstractmethod
    async def is_alive(self, handle: PodHandle) -> bool:
        """True while every process of the pod is running."""

    @abc.abstractmethod
    async def stop_pod(self, handle: PodHandle) -> None:
        """Stop the pod and release everything it held (processes, mounts,
        cgroups, network). Idempotent; safe on a half-started or dead pod."""

    @abc.abstractmethod
    async def list_pods(self) -> list[str]:
        """Session ids of pods this backend owns that still hold resources."""

    @abc.abstractmethod
    def agent_socket(self, handle: PodHandle) -> Path:
        """Host path of the runtime agent's HTTP unix socket."""

    def agent_endpoint(self, handle: PodHandle) -> AgentEndpoint:
        """How the gateway reaches the pod's runtime agent: its unix socket by default;
        backends with agents on other machines give TCP, TLS and the session's secret."""
        return AgentEndpoint(socket=self.agent_socket(handle))

    async def capacity(self) -> int | None:
        """Further sessions the backend can place now (None: only ``--max-sessions``
        limits them). The manager answers 503 when this is 0."""
        return None

    @abc.abstractmethod
    def files_dir(self, handle: PodHandle) -> Path:
        """Host path of the session's shared folder (Chromium's downloads)."""

    async def resource_events(self, handle: PodHandle) -> dict[str, int]:
        """Times the app sandbox hit a limit so far, by kind: ``pids`` (forks refused)
        and ``memory`` (processes OOM-killed). Empty when the backend cannot tell."""
        return {}

    async def restart_agent(self, handle: PodHandle, request: PodRequest) -> None:
        """Start a new runtime agent in a pod whose agent died but whose desktop runs
        (updates *handle*); BackendError when that is not possible."""
        raise BackendError(f"the {self.name} backend cannot restart a runtime agent")

    async def claim_pod(self, handle: PodHandle, request: PodRequest) -> None:
        """Apply what the backend must change when a pooled pod is claimed for *request*
        (updates *handle*); BackendError when it cannot."""

    async def memory_bytes(self, handle: PodHandle) -> int | None:
        """Memory the pod uses now (None when the backend cannot tell)."""
        return None

    def pids_limit(self, configured: int) -> int:
        """The process limit this backend really gives an app sandbox."""
        return configured

    async def exit_reason(self, handle: PodHandle) -> str:
        """Which part of a dead pod exited and how, for the session's ``error``."""
        return "the session's processes exited"

    async def aclose(self) -> None:
        """Release backend-wide resources (clients, rules)."""

    def _error_message(self, error: Exception) -> str:
        """A safe one-line description of a start failure (backends refine it)."""
        return str(error)

    async def _start_or_clean_up(self, handle: PodHandle,
                                 start: Callable[[], Awaitable[None]]) -> None:
        """Run *start*; on any failure (or cancellation) remove whatever it created,
        then raise :class:`BackendError` (cancellation is re-raised as is)."""
        try:
            await start()
        except BaseException as e:
            logger.warning("session %s: pod start failed: %s", handle["session_id"],
                           "cancelled (the session was stopped while starting)"
                           if isinstance(e, asyncio.CancelledError) else (str(e) or repr(e)))
            await asyncio.shield(self.stop_pod(handle))
            if isinstance(e, BackendError):
                raise
            if isinstance(e, Exception):
                raise BackendError(f"pod start failed: {self._error_message(e)}") from e
            raise


def prepare_session_dirs(request: PodRequest, uid_app: int, uid_agent: int) -> dict[str, Path]:
    """Create the host folders of a pod with the ownership every backend needs.

    The runtime agent alone owns its run folder (its unix socket) and the
    recording folder (written outside the app sandbox); the session user owns
    the shared folder; the X socket folder and the X cookie are the pod's two
    uids' only (:mod:`.xauth`).
    """
    paths = session_paths(request.session_dir, request.runtime_dir)
    for key in ("run", "x11", "home", "files", "logs"):
        paths[key].mkdir(parents=True, exist_ok=True)
    request.session_dir.chmod(0o755)
    request.runtime_dir.chmod(0o755)
    secure_x11_dir(paths["x11"], uid_app, uid_agent)
    write_xauthority(paths["xauth"], uid_app, uid_agent)
    os.chown(paths["run"], uid_agent, uid_agent)
    paths["run"].chmod(0o700)
    os.chown(paths["files"], uid_app, uid_app)
    paths["files"].chmod(0o700)  # the session's uid alone (another pod's uid cannot look in)
    if request.spec.enable_recording:
        recording = request.session_dir / "recording"
        recording.mkdir(exist_ok=True)
        os.chown(recording, uid_agent, uid_agent)
        recording.chmod(0o755)
    return paths


def session_paths(session_dir: Path, runtime_dir: Path) -> dict[str, Path]:
    """The standard layout of a session's folders on the host."""
    return {
        "run": runtime_dir / "run",
        "x11": runtime_dir / "x11",
        "xauth": runtime_dir / "Xauthority",
        "home": session_dir / "home",
        "files": session_dir / "home" / "Downloads",
        "logs": session_dir / "logs",
    }


def viewer_limit_args(config: GatewayConfig) -> list[str]:
    """The runtime agent's flags for the configured frame-rate cap (``--max-fps``) and
    viewer caps (``--viewer-limit``)."""
    args: list[str] = ["--fps", str(config.max_fps)]
    if config.bitrate_policy != "steering":  # the agent's default: images older than it work
        args += ["--bitrate-policy", config.bitrate_policy]
    for name, value in config.viewer_limits:
        args += [viewer_limit_flag(name), f"{value:g}" if name == "ice_deadline_s"
                 else str(int(value))]
    return args
