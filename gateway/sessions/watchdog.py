"""The watchdog: what the gateway checks on every running session, each poll.

Once per ``--poll-interval`` it looks at each running session:

* past its ``expires_at`` or its idle deadline: stopped (``timeout``,
  ``idle_timeout``);
* its pod dead: the runtime agent is restarted if ``--agent-restarts`` allows (the
  desktop and its apps kept running), otherwise the session fails with the reason
  and the tail of its app log, naming a resource limit it hit;
* otherwise the runtime agent's ``/stats`` give the viewer count
  (``viewer_joined`` / ``viewer_left``), the viewers its guards closed
  (``viewer_closed``) and the last human input (which keeps the session from idling).

It changes sessions only through the :class:`~gateway.sessions.manager.SessionManager`
that owns it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from gateway.errors import BackendError
from gateway.sessions.agent_link import AgentUnavailable
from gateway.sessions.events import EventHub
from gateway.sessions.limits import describe_hits
from gateway.sessions.session import Session, SessionStatus, StopReason, utcnow

if TYPE_CHECKING:
    from gateway.sessions.manager import SessionManager

logger = logging.getLogger(__name__)

OnStop = Callable[[Session], Awaitable[None]]
"""A hook awaited with a session (before an agent restart, after a pod stopped)."""


class Watchdog:
    """Checks the running sessions of one manager (see the module docstring)."""

    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    async def run(self) -> None:
        """Check every running session once per poll interval, for ever."""
        manager = self._manager
        while True:
            await asyncio.sleep(manager.config.poll_interval_s)
            for session in manager.list():
                if session.status is not SessionStatus.RUNNING:
                    continue
                try:
                    await self.check(session)
                except Exception:  # noqa: BLE001 - one session must not stop the watchdog
                    logger.exception("session %s: check failed", session.session_id)

    async def check(self, session: Session) -> None:
        manager = self._manager
        sid = session.session_id
        now = utcnow()
        if now >= session.expires_at:
            manager.stop_soon(sid, StopReason.TIMEOUT)
            return
        limits = await manager.limits.report(session)
        if not await manager.backend.is_alive(session.pod):
            # Counted before the pod is gone: an OOM kill may be why it died.
            limits = await manager.limits.report(session) or limits
            reason = await manager.backend.exit_reason(session.pod)
            if await self.restart_agent(session, reason):
                return
            if limits:
                reason += " after hitting its " + describe_hits(limits)
            session.error = f"{reason}: {manager.log_tail(sid)}"
            logger.warning("session %s: %s", sid, reason)
            manager.stop_soon(sid, StopReason.ERROR)
            return
        try:
            stats = await manager.agent_client(session).stats()
        except AgentUnavailable as e:
            logger.debug("session %s: stats unavailable: %s", sid, e)
            stats = {}
        if stats:
            _viewers_closed(manager.events, sid, manager.agent_stats.get(sid, {}), stats)
            manager.agent_stats[sid] = stats
            viewers = int(stats.get("viewers", 0))
            if viewers != session.viewers:
                kind = "viewer_joined" if viewers > session.viewers else "viewer_left"
                manager.events.emit(sid, kind, viewers=viewers)
                session.viewers = viewers
            idle_s = stats.get("input_idle_s")
            if isinstance(idle_s, int | float):
                input_at = now - timedelta(seconds=float(idle_s))
                if input_at > session.last_activity:
                    session.last_activity = input_at
        deadline = session.idle_deadline()
        if deadline is not None and now >= deadline:
            manager.stop_soon(sid, StopReason.IDLE_TIMEOUT)

    async def restart_agent(self, session: Session, reason: str) -> bool:
        """Restart a dead runtime agent if ``agent_restarts`` allows; True when it runs again.

        The desktop and its apps keep running; viewers reconnect; control is restored;
        the recording goes on in a new segment (joined at finalisation)."""
        manager = self._manager
        config = manager.config
        sid = session.session_id
        restarts = session.pod.get("agent_restarts", 0)
        done = restarts if isinstance(restarts, int) else 0
        if done >= config.agent_restarts:
            return False
        async with manager.lock(sid):
            if session.status is not SessionStatus.RUNNING:
                return True  # being stopped anyway
            for hook in list(manager.restart_hooks):
                try:
                    await hook(session)
                except Exception:  # noqa: BLE001 - a hook must not prevent the restart
                    logger.exception("session %s: restart hook failed", sid)
            session.pod["agent_restarts"] = done + 1
            manager.save(session)
            await manager.drop_client(sid)
            try:
                await manager.backend.restart_agent(session.pod, manager.pod_request(session))
                manager.save(session)
                await self._wait_healthy(session)
            except BackendError as e:
                logger.warning("session %s: runtime agent restart failed: %s", sid, e)
                return False
            await manager.push_control(session)
            manager.counters["agent_restarts"] = manager.counters.get("agent_restarts", 0) + 1
            manager.events.emit(sid, "agent_restarted", attempt=done + 1,
                                max=config.agent_restarts, reason=reason)
            logger.warning("session %s: %s; restarted it (%d of %d)", sid, reason, done + 1,
                           config.agent_restarts)
            return True

    async def _wait_healthy(self, session: Session) -> None:
        """Wait until a restarted runtime agent answers its health check."""
        manager = self._manager
        client = manager.agent_client(session)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + manager.config.start_timeout_s
        while True:
            if not await manager.backend.is_alive(session.pod):
                raise BackendError("the restarted runtime agent exited")
            try:
                if await client.health():
                    return
            except AgentUnavailable:
                pass
            if loop.time() > deadline:
                raise BackendError("the restarted runtime agent served no frame")
            await asyncio.sleep(0.05)


def closed_viewers(stats: dict[str, object]) -> dict[str, int]:
    """Viewers a runtime agent's guards closed, by reason (ghost_peer, datachannel_oversize,
    slow_viewer), from its ``/stats``."""
    limits = stats.get("limits")
    if not isinstance(limits, dict):
        return {}
    closed = limits.get("closed")
    out = {k: int(v) for k, v in closed.items()} if isinstance(closed, dict) else {}
    out["slow_viewer"] = int(limits.get("slow_cut", 0))
    return out


def _viewers_closed(events: EventHub, sid: str, before: dict[str, object],
                    after: dict[str, object]) -> None:
    """File a ``viewer_closed`` event for each guard that closed viewers since the last poll."""
    old = closed_viewers(before)
    for reason, count in sorted(closed_viewers(after).items()):
        if count > old.get(reason, 0):
            events.emit(sid, "viewer_closed", reason=reason, count=count,
                        new=count - old.get(reason, 0))
