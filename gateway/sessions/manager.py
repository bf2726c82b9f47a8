"""The session manager: lifecycle, timeouts, control and re-adoption.

Only this module changes a :class:`~gateway.sessions.session.Session`. Every change is
saved to the store before it becomes visible through the API.

Idle timeout: a session is idle while neither the agent host sends actions
(``POST .../actions``) nor a human in control sends input through the viewer.
Watching, WHEP connections, screenshots and API reads do not count.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from gateway.backends.base import PodRequest, SessionBackend
from gateway.config import GatewayConfig
from gateway.errors import BackendError, CapacityProblem, conflict, not_found
from gateway.sessions.agent_link import AgentClient, AgentUnavailable
from gateway.sessions.events import EventHub
from gateway.sessions.limits import LimitReporter
from gateway.sessions.live import LiveConnections
from gateway.sessions.pool import PooledPod, WarmPool
from gateway.sessions.session import (
    Controller,
    Session,
    SessionStatus,
    StopReason,
    rfc3339,
    utcnow,
)
from gateway.sessions.slots import SlotTable
from gateway.sessions.startup import StartupHistograms
from gateway.sessions.store import SessionStore
from gateway.sessions.tokens import new_session_id, new_token, token_hash
from gateway.sessions.watchdog import OnStop, Watchdog
from gateway.spec import SessionSpec
from wire import agent_api

logger = logging.getLogger(__name__)

MAX_ISSUED_TOKENS = 64
"""Tokens ``POST .../tokens`` may mint per session."""
DOCTOR_HINT = "; run `visual-runtime doctor` to check this machine"
"""Appended to environmental start failures (the backend could not start a pod)."""


class SessionManager:
    """Owns every session of this gateway and the tasks that watch them."""

    def __init__(self, config: GatewayConfig, backend: SessionBackend, store: SessionStore,
                 events: EventHub) -> None:
        self._config = config
        self._backend = backend
        self._store = store
        self.events = events
        self._sessions: dict[str, Session] = {}
        self._agents: dict[str, AgentClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed: dict[str, asyncio.Condition] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._start_tasks: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._slots = SlotTable(config.runtime_dir / "slots")
        self.counters: dict[str, int] = {"actions": 0, "errors": 0, "sessions_created": 0}
        self.agent_stats: dict[str, dict[str, object]] = {}
        self.limits = LimitReporter(config, backend, events)
        """``resource_limit`` events and the totals of /metrics."""
        self.restart_hooks: list[OnStop] = []
        """Awaited before a dead runtime agent is restarted (e.g. keep its recording)."""
        self._starting = asyncio.Semaphore(config.max_starting or 2 * (os.cpu_count() or 1))
        """Cold starts at once: fifty at a time on two cores all missed their start
        timeout (a burst of creates measured by benchmarks/session_start)."""
        self.pool: WarmPool | None = None
        """Warm pods to claim from (set by ``create_app`` when ``--pool-size`` is on)."""
        self.startup = StartupHistograms()
        """Start-up spans of every session (/metrics)."""
        self.stop_hooks: list[OnStop] = []
        """Awaited after a session's pod stopped, before its terminal state (e.g. finalise
        the recording); a failing hook is logged and does not block the stop."""
        self.live = LiveConnections()
        """Open viewer connections by token, closed when their token is revoked."""
        self.stop_hooks.append(self.live.on_stop)
        self.watchdog = Watchdog(self)
        """Expiry, idle time, dead pods and agent restarts, viewer counts."""

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load the store, re-adopt live pods, remove dead ones, start the watcher."""
        for session in self._store.load_all():
            self._sessions[session.session_id] = session
            if session.status.terminal:
                continue
            alive = bool(session.pod) and await self._backend.is_alive(session.pod)
            client = self.agent_client(session) if alive else None
            if alive and client is not None:
                try:
                    ready = await client.health()
                except AgentUnavailable:
                    ready = False
                if ready:
                    if session.status is SessionStatus.STARTING:
                        session.transition(SessionStatus.RUNNING)
                    self.save(session)
                    await self.push_control(session)
                    # Hits while the gateway was down are not reported again.
                    await self.limits.adopt(session)
                    logger.info("session %s: re-adopted", session.session_id)
                    continue
            logger.warning("session %s: pod lost while the gateway was down",
                           session.session_id)
            session.error = "the session's pod did not survive a gateway restart"
            await self._finish(session, StopReason.ERROR)
        known = {sid for sid, s in self._sessions.items() if s.status.live}
        for sid in await self._backend.list_pods():
            # Pods of sessions this gateway never knew belong to another gateway.
            ours = sid in self._sessions or self._session_dir(sid).exists()
            if sid not in known and ours:
                logger.warning("removing leftover pod %s", sid)
                stop_leftover = getattr(self._backend, "stop_leftover", None)
                if stop_leftover is not None:
                    await stop_leftover(sid, self._session_dir(sid),
                                        self._config.runtime_dir / sid)
        self._watcher = asyncio.create_task(self.watchdog.run())

    async def aclose(self) -> None:
        """Stop every live session (reason ``shutdown``) and the watcher."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        live = [s for s in self._sessions.values() if not s.status.terminal]
        await asyncio.gather(*(self.stop(s.session_id, StopReason.SHUTDOWN) for s in live),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._agents.values():
            await client.aclose()
        self._agents.clear()

    # ------------------------------------------------------------- queries
    @property
    def by_id(self) -> dict[str, Session]:
        """Live view of every known session by id (for token lookups)."""
        return self._sessions

    def get(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise not_found(f"no session with id {session_id!r}")
        return session

    def list(self) -> list[Session]:
        return sorted(self._sessions.values(), key=lambda s: s.created_at)

    def agent(self, session: Session) -> AgentClient:
        """The runtime agent of a running session (409 otherwise)."""
        if session.status is not SessionStatus.RUNNING:
            raise conflict("session-not-running",
                           f"session {session.session_id} is {session.status.value}",
                           "Session not running")
        return self.agent_client(session)

    def files_dir(self, session: Session) -> Path:
        return self._session_dir(session.session_id) / "home" / "Downloads"

    def session_dir(self, session: Session) -> Path:
        return self._session_dir(session.session_id)

    async def wait_for_status(self, session_id: str, timeout: float) -> Session:
        """Wait until the session is past ``starting`` or *timeout* passes."""
        session = self.get(session_id)
        cond = self._condition(session_id)
        async with cond:
            try:
                await asyncio.wait_for(
                    cond.wait_for(lambda: session.status is not SessionStatus.STARTING), timeout
                )
            except TimeoutError:
                pass
        return session

    # ------------------------------------------------------------ commands
    @property
    def slots(self) -> SlotTable:
        return self._slots

    def live_count(self) -> int:
        return sum(1 for s in self._sessions.values() if not s.status.terminal)

    def cold_starts(self) -> int:
        """Sessions starting right now, cold or claimed (the pool's refill waits for them:
        someone is waiting for these)."""
        return len(self._start_tasks)

    async def create(self, spec: SessionSpec) -> tuple[Session, dict[str, str]]:
        t0 = asyncio.get_running_loop().time()
        live = [s for s in self._sessions.values() if not s.status.terminal]
        if len(live) >= self._config.max_sessions:
            raise CapacityProblem(
                f"{len(live)} of {self._config.max_sessions} sessions are in use; "
                "stop one or retry later"
            )
        room = await self._backend.capacity()
        if room is not None and room < 1:
            raise CapacityProblem(f"the {self._backend.name} backend has no room for another "
                                  "session now (see `doctor`); stop one or retry later")
        pooled = self.pool.claim(spec) if self.pool is not None else None
        if pooled is not None:
            sid, slot = pooled.session_id, pooled.slot
        else:
            # Pooled pods count against max_sessions, but give way to a session.
            if (self.pool is not None
                    and len(live) + self.pool.count >= self._config.max_sessions
                    and not self.pool.evict_one()):
                raise CapacityProblem(f"{len(live)} of {self._config.max_sessions} sessions "
                                      "are in use; stop one or retry later")
            sid = new_session_id()
            slot = self._slots.acquire(sid)
        tokens = {"view": new_token(), "control": new_token()}
        session = Session(
            session_id=sid,
            spec=spec,
            backend=self._backend.name,
            created_at=utcnow(),
            view_token_hash=token_hash(tokens["view"]),
            control_token_hash=token_hash(tokens["control"]),
            slot=slot,
            minute_s=self._config.minute_s,
            pod=pooled.handle if pooled is not None else {},
            from_pool=pooled is not None,
        )
        self._sessions[session.session_id] = session
        self.save(session)
        self.counters["sessions_created"] += 1
        self.events.emit(session.session_id, "status", status=session.status.value)
        logger.info("session %s: created (%s, network %s%s)", session.session_id,
                    spec.resolution_str, spec.network, ", from the warm pool" if pooled else "")
        task = asyncio.create_task(self._start_pod(session, pooled, t0))
        self._start_tasks[session.session_id] = task
        self._hold(task)
        return session, tokens

    async def stop(self, session_id: str, reason: StopReason = StopReason.REQUESTED) -> Session:
        session = self.get(session_id)
        async with self.lock(session_id):
            if session.status.terminal:
                return session
            await self._finish(session, reason)
        return session

    async def delete(self, session_id: str) -> None:
        session = await self.stop(session_id)
        async with self.lock(session_id):
            self._sessions.pop(session_id, None)
            self._store.delete(session_id)
            await asyncio.to_thread(shutil.rmtree, self._session_dir(session_id), True)
            self.events.forget(session_id)
        logger.info("session %s: deleted", session.session_id)

    async def set_control(self, session: Session, action: str, token: str,
                          by: str = "api", *, holder: str | None = None) -> Session:
        """``take`` or ``release`` by the holder of *token* (control or API token).

        *by* is the token's kind (``control`` or ``api``). A change emits one
        ``control`` event (who, when; a release also names a screenshot URL
        to resume from), which also goes to every viewer's data channel as
        ``{"type": "event", "event": {...}}``. The runtime agent's gate has
        switched before this returns, so no agent input follows a ``take``.
        """
        async with self.lock(session.session_id):
            if session.status is not SessionStatus.RUNNING:
                raise conflict("session-not-running",
                               f"session {session.session_id} is {session.status.value}",
                               "Session not running")
            holder = holder or token_hash(token)
            if action == "take":
                if (session.controller is Controller.HUMAN
                        and session.controller_token_hash not in (None, holder)):
                    raise conflict("control-held", "another viewer holds control",
                                   "Control held by someone else")
                new, owner = Controller.HUMAN, holder
            else:
                if (session.controller is Controller.HUMAN
                        and session.controller_token_hash not in (None, holder)):
                    raise conflict("control-held",
                                   "control can only be released by the token that took it",
                                   "Control held by someone else")
                new, owner = Controller.AGENT, None
            changed = new is not session.controller or owner != session.controller_token_hash
            await self.agent_client(session).set_controller(new.value, owner[:32] if owner else None)
            if changed:
                session.controller = new
                session.controller_token_hash = owner
                session.controller_since = utcnow()
                session.last_activity = utcnow()
                self.save(session)
                extra: dict[str, object] = {"controller": new.value, "action": action,
                                            "by": by,
                                            "since": rfc3339(session.controller_since)}
                if new is Controller.AGENT:
                    extra["screenshot_url"] = (
                        f"/api/visual-sessions/{session.session_id}/screenshot")
                event = self.events.emit(session.session_id, "control", **extra)
                try:
                    await self.agent_client(session).request(
                        "POST", agent_api.BROADCAST, json_body={"type": "event", "event": event})
                except AgentUnavailable as e:
                    logger.warning("session %s: control event not sent to viewers: %s",
                                   session.session_id, e)
                logger.info("session %s: control %s by %s token", session.session_id,
                            action, by)
            return session

    async def issue_token(self, session_id: str, kind: str) -> str:
        """Mint another ``view`` or ``control`` token for a live session.

        It works like the ones returned at creation (and ends with the session);
        409 once the session is stopping or over, or when it already has
        ``MAX_ISSUED_TOKENS`` minted tokens.
        """
        session = self.get(session_id)
        async with self.lock(session_id):
            if not session.status.live:
                raise conflict("session-not-running",
                               f"session {session_id} is {session.status.value}",
                               "Session not running")
            if len(session.issued_tokens) >= MAX_ISSUED_TOKENS:
                raise conflict("too-many-tokens",
                               f"session {session_id} already has {MAX_ISSUED_TOKENS} "
                               "minted tokens", "Too many tokens")
            token = new_token()
            digest = token_hash(token)
            session.issued_tokens[digest] = kind
            self.save(session)
        self.events.emit(session_id, "token_issued", kind=kind, token_id=digest[:32])
        logger.info("session %s: %s token issued", session_id, kind)
        return token

    async def revoke_token(self, session_id: str, token_id: str) -> dict[str, object]:
        """Revoke a live token of the session by its id (the first 32 hex digits of its
        SHA-256): refused from now on, its open viewers closed, control released if it
        held it. 404 for an id that is not a live token of the session."""
        session = self.get(session_id)
        if not session.status.live:
            raise conflict("session-not-running",
                           f"session {session_id} is {session.status.value}", "Session not running")
        tokens = {session.view_token_hash: "view", session.control_token_hash: "control",
                  **session.issued_tokens}
        match = [(d, k) for d, k in tokens.items()
                 if d[:32] == token_id and d not in session.revoked_tokens]
        if len(token_id) != 32 or not match:
            raise not_found(f"session {session_id} has no live token with id {token_id!r}")
        digest, kind = match[0]
        session.revoked_tokens.add(digest)
        self.save(session)
        held = (session.controller is Controller.HUMAN
                and session.controller_token_hash == digest)
        if held:
            try:
                await self.set_control(session, "release", "", by="revoked", holder=digest)
            except AgentUnavailable as e:  # the token is refused anyway; the agent keeps input
                logger.warning("session %s: control not released from the agent: %s",
                               session_id, e)
        closed = await self.live.revoke(session_id, token_id)
        self.events.emit(session_id, "token_revoked", kind=kind, token_id=token_id,
                         closed=closed, released_control=held)
        logger.info("session %s: %s token %s revoked (%d connections closed)", session_id,
                    kind, token_id, closed)
        return {"session_id": session_id, "token_id": token_id, "kind": kind,
                "closed": closed, "released_control": held}

    def note_action(self, session: Session) -> None:
        session.last_activity = utcnow()
        self.counters["actions"] += 1

    # ----------------------------------------------------------- internals
    async def _start_pod(self, session: Session, pooled: PooledPod | None = None,
                         t0: float | None = None) -> None:
        sid = session.session_id
        loop = asyncio.get_running_loop()
        t0 = loop.time() if t0 is None else t0
        request = self.pod_request(session)
        spans: dict[str, float] = {}
        try:
            t1 = loop.time()
            if pooled is not None and not await self._claim(session, request, spans):
                pooled = None  # the claim failed and the pod is gone: start cold instead
            if pooled is None:
                async with self._starting:
                    spans["queued"] = (loop.time() - t1) * 1000
                    t1 = loop.time()
                    session.pod = await self._backend.start_pod(request)
                    spans["start_pod"] = (loop.time() - t1) * 1000
                    await self._first_frame(session, spans)
            else:
                await self._first_frame(session, spans)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any start failure fails the session
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Stopped while starting: the stopper holds the session's lock and is
                # waiting for this task, so it finishes the session, not this task.
                logger.warning("session %s: the cancelled start ended in: %s", sid, e)
                raise asyncio.CancelledError from e
            hint = DOCTOR_HINT if isinstance(e, BackendError) else ""
            logger.warning("session %s: start failed: %s%s", sid, e, hint)
            self.counters["errors"] += 1
            async with self.lock(sid):
                if not session.status.terminal:
                    session.error = (str(e) + hint) if isinstance(e, BackendError) \
                        else "start failed"
                    await self._finish(session, StopReason.ERROR)
            return
        finally:
            self._start_tasks.pop(sid, None)
        async with self.lock(sid):
            if session.status is SessionStatus.STARTING:
                spans["total"] = (loop.time() - t0) * 1000
                session.transition(SessionStatus.RUNNING)
                session.last_activity = utcnow()
                self.save(session)
                self.events.emit(sid, "startup", from_pool=session.from_pool,
                                 spans_ms={k: round(v, 1) for k, v in spans.items()})
                self.startup.observe(spans, session.from_pool)
                self.events.emit(sid, "status", status="running")
                logger.info("session %s: running after %.0f ms%s", sid, spans["total"],
                            " (warm pool)" if session.from_pool else "")
                await self._notify(sid)

    async def _claim(self, session: Session, request: PodRequest,
                     spans: dict[str, float]) -> bool:
        """Turn a claimed pooled pod into *session*'s pod; False (pod removed) on failure."""
        sid = session.session_id
        loop = asyncio.get_running_loop()
        t1 = loop.time()
        spec = session.spec
        try:
            await self._backend.claim_pod(session.pod, request)
            self.save(session)
            spans["claim_backend"] = (loop.time() - t1) * 1000
            reply = await self.agent_client(session).request(
                "POST", agent_api.CLAIM, timeout=15, json_body={
                    "resolution": spec.resolution_str, "start_url": spec.start_url,
                    "recording": spec.enable_recording})
            if reply.status != 200:
                raise BackendError(f"the pooled agent refused the claim ({reply.status}): "
                                   f"{reply.body[:200].decode(errors='replace')}")
            spans["claim"] = (loop.time() - t1) * 1000
            return True
        except (BackendError, AgentUnavailable, OSError) as e:
            logger.warning("session %s: claiming the pooled pod failed (%s); starting cold",
                           sid, e)
            self.counters["errors"] += 1
            try:
                await self._backend.stop_pod(session.pod)
            except Exception:  # noqa: BLE001 - a cold start follows either way
                logger.exception("session %s: removing the pooled pod failed", sid)
            await self.drop_client(sid)
            session.pod = {}
            session.from_pool = False
            return False

    async def _first_frame(self, session: Session, spans: dict[str, float]) -> None:
        """Record the backend's spans, then wait for the first frame and add the agent's."""
        loop = asyncio.get_running_loop()
        backend_spans = session.pod.pop("spans", None)
        if isinstance(backend_spans, dict):
            spans.update(backend_spans)
        self.save(session)
        t1 = loop.time()
        spans.update(await self._wait_first_frame(session))
        spans["first_frame_wait"] = (loop.time() - t1) * 1000

    async def _wait_first_frame(self, session: Session) -> dict[str, float]:
        """Wait until the runtime agent serves a first frame; its start-up spans."""
        client = self.agent_client(session)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout_s
        while True:
            if not await self._backend.is_alive(session.pod):
                reason = await self._backend.exit_reason(session.pod)
                raise BackendError(f"the pod exited during start-up ({reason}): "
                                   + self.log_tail(session.session_id))
            try:
                # A long poll: the agent answers as soon as it has a frame.
                reply = await client.request("GET", agent_api.HEALTH + "?wait=1", timeout=3)
                body = reply.json() if reply.status == 200 else {}
                if isinstance(body, dict) and body.get("first_frame"):
                    spans = body.get("spans")
                    return ({k: float(v) for k, v in spans.items()
                             if isinstance(v, int | float)} if isinstance(spans, dict) else {})
            except AgentUnavailable:
                pass  # no socket yet: the agent is still importing
            if loop.time() > deadline:
                raise BackendError(
                    f"no first frame within {self._config.start_timeout_s:.0f} s")
            await asyncio.sleep(0.01)

    async def _finish(self, session: Session, reason: StopReason) -> None:
        """Stop the pod and move to the terminal state of *reason* (lock held)."""
        sid = session.session_id
        start_task = self._start_tasks.pop(sid, None)
        if start_task is not None and start_task is not asyncio.current_task():
            start_task.cancel()
            await asyncio.gather(start_task, return_exceptions=True)
        if session.status is not SessionStatus.STOPPING:
            session.transition(SessionStatus.STOPPING)
        session.stop_reason = reason
        self.save(session)
        self.events.emit(sid, "status", status="stopping", stop_reason=reason.value)
        if session.pod:
            try:
                await self._backend.stop_pod(session.pod)
            except Exception as e:  # noqa: BLE001 - must still reach a terminal state
                logger.error("session %s: stopping the pod failed: %s", sid, e)
                self.counters["errors"] += 1
        await self.drop_client(sid)
        self.agent_stats.pop(sid, None)
        self.limits.forget(sid)
        for hook in list(self.stop_hooks):
            try:
                await hook(session)
            except Exception:  # noqa: BLE001 - a hook must not keep a session alive
                logger.exception("session %s: stop hook failed", sid)
        session.viewers = 0
        self._slots.release(session.slot, sid)
        session.transition(reason.final_status)
        self.save(session)
        self.events.emit(sid, "status", status=session.status.value, stop_reason=reason.value)
        logger.info("session %s: %s (%s)", sid, session.status.value, reason.value)
        await self._notify(sid)

    def stop_soon(self, sid: str, reason: StopReason) -> None:
        """Stop a session in the background (a failure is logged)."""
        self._hold(asyncio.create_task(self._stop_quietly(sid, reason)))

    async def drop_client(self, sid: str) -> None:
        """Close and forget the cached link to a session's runtime agent."""
        client = self._agents.pop(sid, None)
        if client is not None:
            await client.aclose()

    def pod_request(self, session: Session) -> PodRequest:
        sid = session.session_id
        return PodRequest(sid, session.spec, session.slot, self._session_dir(sid),
                          self._config.runtime_dir / sid)

    @property
    def config(self) -> GatewayConfig:
        return self._config

    @property
    def backend(self) -> SessionBackend:
        return self._backend

    async def _stop_quietly(self, sid: str, reason: StopReason) -> None:
        try:
            await self.stop(sid, reason)
        except Exception:  # noqa: BLE001
            logger.exception("session %s: stop (%s) failed", sid, reason.value)

    async def push_control(self, session: Session) -> None:
        owner = session.controller_token_hash
        try:
            await self.agent_client(session).set_controller(session.controller.value,
                                                       owner[:32] if owner else None)
        except AgentUnavailable as e:
            logger.warning("session %s: could not restore control: %s", session.session_id, e)

    def agent_client(self, session: Session) -> AgentClient:
        client = self._agents.get(session.session_id)
        if client is None:
            client = AgentClient(self._backend.agent_endpoint(session.pod), session.session_id)
            self._agents[session.session_id] = client
        return client

    def _session_dir(self, session_id: str) -> Path:
        return self._config.sessions_dir / session_id

    def log_tail(self, session_id: str) -> str:
        path = self._session_dir(session_id) / "logs" / "app.log"
        try:
            return path.read_bytes()[-300:].decode(errors="replace").strip()
        except OSError:
            return "(no log)"

    def save(self, session: Session) -> None:
        self._store.save(session)

    def lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def _condition(self, session_id: str) -> asyncio.Condition:
        return self._changed.setdefault(session_id, asyncio.Condition())

    async def _notify(self, session_id: str) -> None:
        cond = self._condition(session_id)
        async with cond:
            cond.notify_all()

    def _hold(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

