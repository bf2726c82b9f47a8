"""The warm pool: pods started ahead of time, claimed by ``POST /api/visual-sessions``.

A pooled pod is a whole pod (desktop, window manager, apps, runtime agent) started
with ``PodRequest.pooled``: its Xvfb at the pool key's largest size, its runtime
agent imported and waiting (``agent_side.pooled``), its network namespace empty
(``local``). Nobody has seen it: it has no session record, no tokens, no event log
and no recording until a claim turns it into a session (``SessionManager``), which
then applies what may differ per session (resolution by RandR, start URL, network
on ``local``, recording, timeouts).

Keys are what a pod cannot change at claim (``GatewayConfig.pool_sizes``). A spec
is served by the smallest key that fits it.

Refill runs in the background, one pod at a time, within a CPU budget (a pause
after each start proportional to its length), never while sessions are starting
and never while the load average per core is above ``pool_max_load``. Pooled pods
count against ``max_sessions``. Every ``CHECK_INTERVAL_S`` ready pods are checked:
dead ones, ones older than ``pool_max_age_s`` and ones whose memory grew by more
than ``pool_memory_growth_mb`` are replaced.

Restarts: the pool writes its pods to ``<state>/pool.json`` before starting each;
a gateway that starts after a crash (or SIGKILL) removes every pod listed there
(and whatever a half-started one left) before it refills. Pooled pods are cheap to
replace, so they are removed rather than adopted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.backends.base import PodHandle, PodRequest, SessionBackend
from gateway.config import GatewayConfig
from gateway.errors import BackendError
from gateway.sessions.agent_link import AgentClient, AgentUnavailable
from gateway.sessions.slots import SlotTable
from gateway.sessions.tokens import new_session_id
from gateway.spec import SessionSpec
from wire import agent_api

__all__ = ["PooledPod", "WarmPool"]

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0
"""How often ready pooled pods are checked (alive, age, memory)."""
SETTLE_S = 2.0
"""A new pod is offered this long after it is warm: Chromium keeps initialising for a
while after its first page, and a claim then would share the CPU with it."""
FAILURE_BACKOFF_S = 5.0
"""Pause after a pooled pod failed to start, so a broken machine is not hammered."""


@dataclass
class PooledPod:
    """One warm pod, as the pool tracks it."""

    session_id: str
    """The id the session will have when claimed (never shown before)."""
    key: str
    slot: int
    handle: PodHandle = field(default_factory=dict)
    ready: bool = False
    started_at: float = field(default_factory=time.monotonic)
    ready_memory: int | None = None
    start_s: float = 0.0
    """Seconds from start to warm (for /metrics)."""


def key_size(key: str) -> tuple[int, int]:
    w, _, h = key.split("/")[0].partition("x")
    return int(w), int(h)


def key_network(key: str) -> str | None:
    return key.partition("/")[2] or None


class WarmPool:
    """Keeps ``config.pool_sizes()`` warm pods; see the module docstring."""

    def __init__(self, config: GatewayConfig, backend: SessionBackend, slots: SlotTable,
                 live_sessions: Callable[[], int], cold_starts: Callable[[], int]) -> None:
        self._config = config
        self._backend = backend
        self._slots = slots
        self._live = live_sessions
        self._cold = cold_starts
        self.sizes = config.pool_sizes()
        self._pods: dict[str, PooledPod] = {}
        self._file = config.state_dir / "pool.json"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {"claimed": 0, "started": 0, "failed": 0,
                                         "replaced_stale": 0, "replaced_dead": 0,
                                         "evicted": 0, "misses": 0}
        self.start_seconds: list[float] = []
        """Start-to-warm times of the last pods (for /metrics)."""

    # ----------------------------------------------------------- lifecycle
    @property
    def enabled(self) -> bool:
        return bool(self.sizes)

    async def remove_leftovers(self) -> None:
        """Remove the pods a previous gateway left in the pool (before sessions load)."""
        await self._remove_leftovers()

    async def start(self) -> None:
        """Start refilling (after the session manager knows its live sessions)."""
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="warm-pool")

    async def aclose(self) -> None:
        """Stop refilling and remove every pooled pod."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        pods = list(self._pods.values())
        self._pods.clear()
        await asyncio.gather(*(self._remove(p) for p in pods), return_exceptions=True)
        await asyncio.gather(*self._stopping, return_exceptions=True)
        self._persist()

    # -------------------------------------------------------------- claims
    @property
    def count(self) -> int:
        """Pooled pods, warm or starting (they count against ``max_sessions``)."""
        return len(self._pods)

    def ready_count(self, key: str | None = None) -> int:
        return sum(1 for p in self._pods.values() if p.ready and key in (None, p.key))

    def key_for(self, spec: SessionSpec) -> str | None:
        """The smallest configured key whose pods can serve *spec*."""
        fits = []
        for key in self.sizes:
            w, h = key_size(key)
            network = key_network(key)
            if spec.resolution[0] <= w and spec.resolution[1] <= h and (
                    network is None or network == spec.network):
                fits.append((w * h, key))
        return min(fits)[1] if fits else None

    def claim(self, spec: SessionSpec) -> PooledPod | None:
        """Take a warm pod for *spec* out of the pool (None: start cold)."""
        key = self.key_for(spec)
        pod = None
        if key is not None:
            ready = [p for p in self._pods.values() if p.ready and p.key == key]
            pod = min(ready, key=lambda p: p.started_at) if ready else None
        if pod is None:
            self.counters["misses"] += 1
            return None
        del self._pods[pod.session_id]
        self._persist()
        self.counters["claimed"] += 1
        self._wake.set()
        return pod

    def request_for(self, pod: PooledPod, spec: SessionSpec) -> PodRequest:
        """The request a claimed pod now serves (the session's own spec)."""
        return PodRequest(pod.session_id, spec, pod.slot, self._session_dir(pod.session_id),
                          self._config.runtime_dir / pod.session_id)

    def evict_one(self) -> bool:
        """Give up one pooled pod (a cold start needs its place); False if none."""
        if not self._pods:
            return False
        pod = min(self._pods.values(), key=lambda p: (p.ready, p.started_at))
        del self._pods[pod.session_id]
        self._persist()
        self.counters["evicted"] += 1
        task = asyncio.create_task(self._remove(pod))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return True

    def describe(self) -> dict[str, Any]:
        """Per key: target, ready, starting (for /metrics and ``doctor``)."""
        return {key: {"target": n, "ready": self.ready_count(key),
                      "starting": sum(1 for p in self._pods.values()
                                      if p.key == key and not p.ready)}
                for key, n in self.sizes.items()}

    # -------------------------------------------------------------- refill
    async def _run(self) -> None:
        last_check = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if time.monotonic() - last_check >= CHECK_INTERVAL_S:
                    last_check = time.monotonic()
                    await self._check_pods()
                key = self._next_key()
                if key is None or self._loaded():
                    continue
                t0 = time.monotonic()
                ok = await self._start_one(key)
                spent = time.monotonic() - t0
                # The CPU budget: a pod start keeps about one core busy while it runs.
                await asyncio.sleep(spent * (1 / self._config.pool_cpu_budget - 1)
                                    if ok else FAILURE_BACKOFF_S)
                self._wake.set()  # more to fill, maybe
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the pool must keep going
                logger.exception("warm pool: refill failed")
                await asyncio.sleep(FAILURE_BACKOFF_S)

    def _next_key(self) -> str | None:
        """A key below its target, when a pod fits under ``max_sessions``."""
        if self._live() + len(self._pods) >= self._config.max_sessions:
            return None
        for key, target in self.sizes.items():
            if sum(1 for p in self._pods.values() if p.key == key) < target:
                return key
        return None

    def _loaded(self) -> bool:
        if self._cold():
            return True  # starting sessions first: they have someone waiting
        try:
            load = os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:
            return False
        return load > self._config.pool_max_load

    def _pooled_spec(self, key: str) -> SessionSpec:
        network = key_network(key) or "none"
        return SessionSpec(resolution=key_size(key), network=network, enable_recording=True,
                           timeout_minutes=0, idle_timeout_minutes=0)

    async def _start_one(self, key: str) -> bool:
        sid = new_session_id()
        slot = self._slots.acquire(sid)
        pod = PooledPod(sid, key, slot)
        self._pods[sid] = pod
        self._persist()  # before anything exists, so a crash in between is cleaned up
        request = PodRequest(sid, self._pooled_spec(key), slot, self._session_dir(sid),
                             self._config.runtime_dir / sid, pooled=True)
        client: AgentClient | None = None
        try:
            pod.handle = await self._backend.start_pod(request)
            self._persist()
            client = AgentClient(self._backend.agent_endpoint(pod.handle), sid)
            deadline = time.monotonic() + self._config.start_timeout_s
            while not await self._warm(client):
                if not await self._backend.is_alive(pod.handle):
                    raise BackendError("the pooled pod exited while warming up")
                if time.monotonic() > deadline:
                    raise BackendError("the pooled pod was not warm in time")
                await asyncio.sleep(0.1)
            await asyncio.sleep(SETTLE_S)
            if not await self._backend.is_alive(pod.handle):
                raise BackendError("the pooled pod exited while settling")
        except asyncio.CancelledError:
            self._pods.pop(sid, None)
            await asyncio.shield(self._remove(pod))
            raise
        except Exception as e:  # noqa: BLE001 - a failed pooled pod is just replaced
            logger.warning("warm pool: pod %s failed to start: %s", sid, e)
            self.counters["failed"] += 1
            if self._pods.pop(sid, None) is not None:
                await self._remove(pod)
            return False
        finally:
            if client is not None:
                await client.aclose()
        if sid not in self._pods:  # evicted while starting
            return True
        pod.ready = True
        pod.handle.pop("spans", None)  # the pool's start is not the session's
        pod.start_s = time.monotonic() - pod.started_at
        pod.ready_memory = await self._backend.memory_bytes(pod.handle)
        self.start_seconds = [*self.start_seconds[-99:], pod.start_s]
        self.counters["started"] += 1
        self._persist()
        logger.info("warm pool: pod %s warm (%s) in %.2f s", sid, key, pod.start_s)
        return True

    @staticmethod
    async def _warm(client: AgentClient) -> bool:
        try:
            reply = await client.request("GET", agent_api.HEALTH, timeout=5)
        except AgentUnavailable:
            return False
        return reply.status == 200 and bool(reply.json().get("ready"))

    async def _check_pods(self) -> None:
        now = time.monotonic()
        for pod in [p for p in self._pods.values() if p.ready]:
            reason = None
            if not await self._backend.is_alive(pod.handle):
                reason, counter = "its processes exited", "replaced_dead"
            elif now - pod.started_at > self._config.pool_max_age_s:
                reason, counter = "it is older than pool_max_age_s", "replaced_stale"
            else:
                used = await self._backend.memory_bytes(pod.handle)
                growth = self._config.pool_memory_growth_mb * 1024 * 1024
                if used is not None and pod.ready_memory is not None and \
                        used - pod.ready_memory > growth:
                    reason, counter = (f"its memory grew by {(used - pod.ready_memory) >> 20} "
                                       "MiB", "replaced_stale")
            if reason is None or self._pods.pop(pod.session_id, None) is None:
                continue
            logger.warning("warm pool: replacing pod %s: %s", pod.session_id, reason)
            self.counters[counter] += 1
            self._persist()
            await self._remove(pod)
            self._wake.set()

    # ------------------------------------------------------------- removal
    async def _remove(self, pod: PooledPod) -> None:
        """Stop a pod that never became a session and delete everything it had."""
        sid = pod.session_id
        try:
            if pod.handle:
                await self._backend.stop_pod(pod.handle)
            else:
                await self._stop_leftover(sid)
        except Exception:  # noqa: BLE001 - still drop the folders and the slot
            logger.exception("warm pool: removing pod %s failed", sid)
        await asyncio.to_thread(shutil.rmtree, self._session_dir(sid), True)
        await asyncio.to_thread(shutil.rmtree, self._config.runtime_dir / sid, True)
        self._slots.release(pod.slot, sid)

    async def _stop_leftover(self, sid: str) -> None:
        stop_leftover = getattr(self._backend, "stop_leftover", None)
        if stop_leftover is not None:
            await stop_leftover(sid, self._session_dir(sid), self._config.runtime_dir / sid)

    async def _remove_leftovers(self) -> None:
        try:
            saved = json.loads(self._file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            logger.warning("warm pool: unreadable %s (%s); ignoring it", self._file, e)
            saved = {}
        pods = [PooledPod(sid, str(p.get("key", "")), int(p.get("slot", 0)),
                          handle=p.get("handle") or {})
                for sid, p in saved.items() if isinstance(p, dict)]
        for pod in pods:
            logger.warning("warm pool: removing pod %s left by a previous gateway",
                           pod.session_id)
            await self._remove(pod)
            if pod.handle:  # a pod started but not yet recorded as such leaves more
                await self._stop_leftover(pod.session_id)
        self._persist()

    def _persist(self) -> None:
        data = {sid: {"key": p.key, "slot": p.slot, "handle": p.handle, "ready": p.ready}
                for sid, p in self._pods.items()}
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self._file)

    def _session_dir(self, sid: str) -> Path:
        return self._config.sessions_dir / sid
