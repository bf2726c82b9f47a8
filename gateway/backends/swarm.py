"""The ``swarm`` backend: each session is a Docker Swarm service on some node.

The gateway runs on a swarm manager and creates, through the docker SDK, one
service per session: one replica, restart condition ``none`` (a dead session
stays dead and is reported, never silently restarted elsewhere), resource
reservations and limits, placement constraints (node labels, by default
``node.labels.visual-runtime==session``) and a spread preference, labels for
re-adoption, and two Swarm secrets (the link secret and the TLS key and
certificate, :mod:`gateway.backends.remote`) readable only by the runtime
agent's uid.

**One container, two sandboxes.** Swarm cannot share an IPC namespace between
two services, and the runtime agent captures through XShm, so both parts of a
session run in one container (``container/pod.sh``): the desktop as uid 10001
in a user and network namespace of its own (loopback only; for ``egress`` a link
to the node behind the session's own firewall rules, :mod:`.swarm_egress`), the runtime agent
as uid 10002 in the node's network (its ICE candidates are the node's
addresses; it serves the gateway over TCP+TLS on ``link_port + slot``). Both
run without capabilities and with ``no_new_privs``; only the few-line
launcher that starts them keeps CAP_SETUID/SETGID/KILL (docs/swarm.md).

**Faults.** A pod is alive while its task runs on a node that is ready and
active. A node that swarm reports down or drained, a task that ended, or a link
that stopped answering for :data:`LINK_DEAD_S` ends the session with a reason
naming the node. The recording and logs are copied to the gateway while the
session runs (:mod:`gateway.backends.mirror`), so they survive the node.

**Capacity.** :meth:`SwarmBackend.capacity` is what the ready, active nodes
that match the constraints can still place at the reservations, so the
gateway answers 503 before swarm would leave a task pending.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import (
    ContainerSpec,
    Healthcheck,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
)

from ..config import GatewayConfig
from ..errors import BackendError
from .base import (
    PodHandle,
    PodRequest,
    SessionBackend,
    session_paths,
    start_step,
    viewer_limit_args,
)
from .docker import LABEL_GATEWAY, LABEL_ROLE, LABEL_SESSION, gateway_label
from .mirror import Mirror
from .remote import AgentEndpoint, new_credentials
from .sandbox import SANDBOX_HOME, chromium_flags
from .swarm_egress import egress_env

logger = logging.getLogger(__name__)

LABEL_PORT = "visual-runtime.link-port"
NODE_ADDRESS_LABEL = "visual-runtime.address"
"""Node label: the address the gateway (and viewers) reach this node at, when the
one swarm reports (``Status.Addr``) is not it."""
ICE_ADDRESSES_LABEL = "visual-runtime.ice-addresses"
"""Node label: comma-separated addresses of the node that viewers can reach; the
runtime agent offers only those as ICE host candidates (default: all of the node's)."""
SECRET_FILE = "vr-link-secret"
BUNDLE_FILE = "vr-link-tls"
AGENT_UID = "10002"
POD_HOME = "/tmp/user"
"""The session user's HOME in the pod (container/pod.sh), on the pod's /tmp."""
POD_CDP_SOCKET = "/tmp/vr-link/cdp.sock"
"""Chromium's DevTools relay in the pod (container/pod.sh makes its folder)."""
POD_FILES_SOCKET = "/tmp/vr-link/files.sock"
"""The shared folder's server in the pod (agent_side/files_server.py)."""
AGENT_CPUS = 1.0
AGENT_MEMORY_MB = 1024
LINK_DEAD_S = 6.0
"""A link that has not answered for this long (while swarm still says the node is
up) counts as a dead node: swarm's own heartbeat takes longer to notice."""
_RUNNING = "running"
_WAITING = {"new", "pending", "assigned", "accepted", "preparing", "starting", "ready"}


class SwarmBackend(SessionBackend):
    """Sessions as swarm services (blocking SDK calls run in threads)."""

    name = "swarm"

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._gw = gateway_label(config.state_dir)
        try:
            self._client = docker.from_env(timeout=60)
            info = self._client.info()
        except docker.errors.DockerException as e:
            raise BackendError(f"the docker engine is not reachable: {e}") from e
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise BackendError("the swarm backend needs a swarm manager: this docker engine is "
                               f"{swarm.get('LocalNodeState') or 'not in a swarm'}"
                               f"{'' if swarm.get('ControlAvailable') else ' (not a manager)'}")
        self._mirrors: dict[str, Mirror] = {}
        self._closed = False

    # ----------------------------------------------------------------- names
    def _name(self, sid: str, role: str) -> str:
        return f"vr-{self._gw[:8]}-{sid}-{role}"

    def _labels(self, sid: str, role: str) -> dict[str, str]:
        return {LABEL_SESSION: sid, LABEL_ROLE: role, LABEL_GATEWAY: self._gw}

    # ----------------------------------------------------------------- start
    async def start_pod(self, request: PodRequest) -> PodHandle:
        sid = request.session_id
        handle: PodHandle = {
            "session_id": sid,
            "session_dir": str(request.session_dir),
            "runtime_dir": str(request.runtime_dir),
            "network": request.spec.network,
            "service": self._name(sid, "pod"),
            "secrets": [self._name(sid, "secret"), self._name(sid, "tls")],
            "port": self._config.swarm_link_port + request.slot,
        }
        await self._start_or_clean_up(handle, lambda: self._start(request, handle))
        return handle

    def _error_message(self, error: Exception) -> str:
        if isinstance(error, docker.errors.APIError):
            return f"docker: {error.explanation or error}"
        return str(error)

    async def _start(self, request: PodRequest, handle: PodHandle) -> None:
        sid = request.session_id
        for sub in ("logs", "recording", "home/Downloads"):
            (request.session_dir / sub).mkdir(parents=True, exist_ok=True)
        creds = new_credentials(sid)
        handle["secret"], handle["cert"] = creds.secret, creds.cert_pem
        egress: dict[str, str] = {}
        if request.spec.network == "egress":
            nodes = await start_step(self._client.api.nodes)
            egress = egress_env(request.slot, self._config.egress_deny, nodes, self._config.host)
        secret_ids = await start_step(self._create_secrets, sid, handle,
                                      [creds.secret, creds.bundle_pem])
        service = await start_step(self._create_service, request, handle, secret_ids, egress)
        handle["service_id"] = service
        logger.info("session %s: swarm service %s", sid, handle["service"])
        task = await self._wait_running(handle)
        node = await start_step(self._node, task["NodeID"])
        handle["node_id"] = task["NodeID"]
        handle["node"] = node["Description"]["Hostname"]
        handle["host"] = (node["Spec"].get("Labels", {}).get(NODE_ADDRESS_LABEL)
                          or node["Status"].get("Addr", ""))
        if not handle["host"]:
            raise BackendError(f"node {handle['node']} reports no address")
        ice = node["Spec"].get("Labels", {}).get(ICE_ADDRESSES_LABEL, "")
        handle["ice_addresses"] = [a.strip() for a in ice.split(",") if a.strip()]
        logger.info("session %s: placed on node %s (%s:%d)", sid, handle["node"],
                    handle["host"], handle["port"])
        self._mirror(handle).start()

    def _create_secrets(self, sid: str, handle: PodHandle, values: list[str]) -> list[str]:
        ids = []
        for name, value in zip(handle["secrets"], values, strict=True):
            self._remove_secret(name)
            secret = self._client.secrets.create(name=name, data=value.encode(),
                                                 labels=self._labels(sid, "secret"))
            ids.append(str(secret.id))
        return ids

    def _create_service(self, request: PodRequest, handle: PodHandle,
                        secret_ids: list[str], egress: dict[str, str]) -> str:
        sid, config = request.session_id, self._config
        w, h = request.spec.resolution
        args = ["pod", "--socket", "/tmp/agent/agent.sock", "--display", ":0",
                "--resolution", f"{w}x{h}", f"--session-id={sid}",
                "--listen", f"0.0.0.0:{handle['port']}",
                "--secret-file", f"/run/secrets/{SECRET_FILE}",
                "--tls-bundle", f"/run/secrets/{BUNDLE_FILE}", "--mirror", "logs=/tmp/logs",
                "--files-socket", POD_FILES_SOCKET]
        if "chromium" in config.apps:  # DevTools through the relay (container/pod.sh)
            args += ["--cdp-socket", POD_CDP_SOCKET]
        if request.spec.enable_recording:
            args += ["--recording", "/tmp/agent/recording",
                     "--recording-min-free-mb", str(config.recording_min_free_mb),
                     "--mirror", "recording=/tmp/agent/recording"]
        if config.ice_port_min and config.ice_port_max:
            args += ["--ice-ports", f"{config.ice_port_min}-{config.ice_port_max}"]
        args += viewer_limit_args(config)
        memory = (config.session_memory_mb + AGENT_MEMORY_MB) * 1024 * 1024
        resources = Resources(
            cpu_limit=int((config.session_cpus + AGENT_CPUS) * 1e9), mem_limit=memory,
            cpu_reservation=int(config.swarm_reserve_cpus * 1e9),
            mem_reservation=config.swarm_reserve_memory_mb * 1024 * 1024)
        resources["Limits"]["Pids"] = self.pids_limit(config.session_pids) + 256
        secrets = [SecretReference(secret_ids[0], handle["secrets"][0], filename=SECRET_FILE,
                                   uid=AGENT_UID, gid=AGENT_UID, mode=0o400),
                   SecretReference(secret_ids[1], handle["secrets"][1], filename=BUNDLE_FILE,
                                   uid=AGENT_UID, gid=AGENT_UID, mode=0o400)]
        spec = ContainerSpec(
            image=config.docker_image, args=args, user="0:0", hostname="visual-runtime",
            env={"VR_SESSION_ID": sid, "VR_RESOLUTION": f"{w}x{h}",
                 "VR_APPS": " ".join(config.apps),
                 "VR_START_URL": request.spec.start_url or "about:blank",
                 # HOME is /tmp/user in the pod (the image's /home is read-only)
                 "VR_CHROMIUM_FLAGS": " ".join(chromium_flags(w, h)).replace(
                     f"{SANDBOX_HOME}/", f"{POD_HOME}/"), **egress},
            labels=self._labels(sid, "pod"), read_only=True, init=False,
            mounts=[Mount("/tmp", None, type="tmpfs", tmpfs_size=1536 * 1024 * 1024,
                          tmpfs_mode=0o1777),
                    Mount("/dev/shm", None, type="tmpfs", tmpfs_size=256 * 1024 * 1024,
                          tmpfs_mode=0o1777)],
            secrets=secrets, stop_grace_period=int(7e9),
            healthcheck=Healthcheck(test=["NONE"]),
            cap_drop=["ALL"],
            # The launcher joins an egress sandbox to the node (container/pod-egress.sh).
            cap_add=["CAP_SETUID", "CAP_SETGID", "CAP_KILL"] + (["CAP_NET_ADMIN"] if egress
                                                                else []),
        )
        preferences = ([("spread", config.swarm_spread)] if config.swarm_spread else None)
        template = TaskTemplate(
            container_spec=spec, resources=resources,
            restart_policy=RestartPolicy(condition="none"),
            placement=Placement(constraints=list(config.swarm_constraints),
                                preferences=preferences),
            log_driver={"Name": "json-file", "Options": {"max-size": "1m", "max-file": "1"}},
            networks=[{"Target": "host"}],
        )
        self._remove_service(handle["service"])
        created = self._client.api.create_service(
            template, name=handle["service"], mode=ServiceMode("replicated", 1),
            labels={**self._labels(sid, "pod"), LABEL_PORT: str(handle["port"])})
        return str(created["ID"])

    async def _wait_running(self, handle: PodHandle) -> dict[str, Any]:
        deadline = time.monotonic() + self._config.start_timeout_s
        last = ""
        while True:
            task = await asyncio.to_thread(self._task, handle["service"])
            if task is not None:
                state = task["Status"]["State"]
                last = task["Status"].get("Err") or task["Status"].get("Message") or state
                if state == _RUNNING:
                    return task
                if state not in _WAITING:
                    node = await asyncio.to_thread(self._hostname, task.get("NodeID", ""))
                    raise BackendError(f"the session's task {state}"
                                       f"{f' on node {node}' if node else ''}: {last}")
            if time.monotonic() > deadline:
                raise BackendError(f"swarm did not start the session within "
                                   f"{self._config.start_timeout_s:.0f} s: {last or 'no task'}")
            await asyncio.sleep(0.2)

    # ----------------------------------------------------------------- state
    def _task(self, service: str) -> dict[str, Any] | None:
        try:
            tasks = self._client.api.tasks(filters={"service": service})
        except docker.errors.NotFound:
            return None
        found: list[dict[str, Any]] = [dict(t) for t in tasks or []]
        if not found:
            return None
        return max(found, key=lambda t: str(t.get("CreatedAt", "")))

    def _node(self, node_id: str) -> dict[str, Any]:
        return dict(self._client.api.inspect_node(node_id))

    def _hostname(self, node_id: str) -> str:
        if not node_id:
            return ""
        try:
            return str(self._node(node_id)["Description"]["Hostname"])
        except docker.errors.DockerException:
            return node_id[:12]

    def _mirror(self, handle: PodHandle) -> Mirror:
        sid = handle["session_id"]
        mirror = self._mirrors.get(sid)
        if mirror is None:
            session_dir = Path(handle["session_dir"])
            mirror = Mirror(sid, self.agent_endpoint(handle),
                            {"logs": session_dir / "logs", "recording": session_dir / "recording"})
            self._mirrors[sid] = mirror
        return mirror

    def _why_dead(self, handle: PodHandle) -> str | None:
        """None while alive, else the reason (naming the node)."""
        node_name = handle.get("node", "?")
        try:
            node = self._node(handle["node_id"])
        except docker.errors.NotFound:
            return f"node {node_name} left the swarm"
        state = node["Status"].get("State")
        availability = node["Spec"].get("Availability")
        if state != "ready":
            return f"node {node_name} is {state} (swarm lost its heartbeat)"
        if availability != "active":
            return f"node {node_name} was set to {availability}"
        task = self._task(handle["service"])
        if task is None:
            return f"the session's service on node {node_name} is gone"
        status = task["Status"]
        if status["State"] != _RUNNING:
            code = (status.get("ContainerStatus") or {}).get("ExitCode")
            return (f"the session's task on node {node_name} is {status['State']}"
                    f"{f' (exit status {code})' if code is not None else ''}"
                    f": {status.get('Err') or status.get('Message', '')}").rstrip(": ")
        mirror = self._mirrors.get(handle["session_id"])
        if (mirror is not None and mirror.ever_ok
                and time.monotonic() - mirror.last_ok > LINK_DEAD_S):
            return (f"node {node_name} stopped answering: the runtime agent's link has been "
                    f"silent for {time.monotonic() - mirror.last_ok:.0f} s")
        return None

    async def is_alive(self, handle: PodHandle) -> bool:
        if not handle.get("node_id"):
            return False
        self._mirror(handle).start()  # after a gateway restart: resume copying
        try:
            reason = await asyncio.to_thread(self._why_dead, handle)
        except docker.errors.DockerException as e:
            logger.warning("session %s: swarm inspect failed: %s", handle.get("session_id"), e)
            return True  # the manager's API hiccuped; the pod itself may be fine
        if reason is not None and handle.get("dead_reason") != reason:
            logger.warning("session %s: %s", handle.get("session_id"), reason)
        handle["dead_reason"] = reason
        return reason is None

    async def exit_reason(self, handle: PodHandle) -> str:
        reason = handle.get("dead_reason")
        if not reason:
            try:
                reason = await asyncio.to_thread(self._why_dead, handle)
            except docker.errors.DockerException as e:
                reason = f"the swarm manager did not answer: {e}"
        return str(reason or "the session's processes exited")

    async def capacity(self) -> int | None:
        return await asyncio.to_thread(self._capacity)

    def _capacity(self) -> int:
        cpu = max(1, int(self._config.swarm_reserve_cpus * 1e9))
        mem = max(1, self._config.swarm_reserve_memory_mb * 1024 * 1024)
        room = 0
        nodes = {}
        for node in self._client.api.nodes():
            if not self.placeable(node):
                continue
            res = node["Description"].get("Resources", {})
            nodes[node["ID"]] = min(int(res.get("NanoCPUs", 0)) // cpu,
                                    int(res.get("MemoryBytes", 0)) // mem)
        used: dict[str, int] = {}
        for task in self._client.api.tasks(filters={"desired-state": "running"}):
            reserved = task.get("Spec", {}).get("Resources", {}).get("Reservations", {})
            if task.get("NodeID") in nodes and reserved:
                used[task["NodeID"]] = used.get(task["NodeID"], 0) + 1
        for node_id, slots in nodes.items():
            room += max(0, slots - used.get(node_id, 0))
        return room

    def placeable(self, node: dict[str, Any]) -> bool:
        """Ready, active and matching every ``node.labels.K==V`` / ``node.role==R`` constraint."""
        if node["Status"].get("State") != "ready" or node["Spec"].get("Availability") != "active":
            return False
        labels = node["Spec"].get("Labels", {})
        for constraint in self._config.swarm_constraints:
            key, op, value = _parse_constraint(constraint)
            if key.startswith("node.labels."):
                actual = labels.get(key[len("node.labels."):])
            elif key == "node.role":
                actual = node["Spec"].get("Role")
            elif key == "node.hostname":
                actual = node["Description"].get("Hostname")
            else:
                continue  # engine labels etc.: swarm decides
            if (actual == value) != (op == "=="):
                return False
        return True

    # ------------------------------------------------------------------ stop
    async def stop_pod(self, handle: PodHandle) -> None:
        sid = handle["session_id"]
        mirror = self._mirrors.pop(sid, None)
        if mirror is not None:
            # A last copy while the agent still serves; the fragment it writes while
            # stopping (under a second of video) stays on the node.
            await mirror.aclose()
            if await asyncio.to_thread(self._running, handle["service"]):
                await mirror.final_sync()
            await mirror.aclose()
        await asyncio.to_thread(self._remove_all, handle["service"], handle.get("secrets", []))
        if handle.get("host") and handle.get("port"):
            await self._wait_port_closed(sid, handle["host"], int(handle["port"]))
        await asyncio.to_thread(shutil.rmtree, handle["runtime_dir"], True)
        logger.info("session %s: service removed", sid)

    @staticmethod
    async def _wait_port_closed(sid: str, host: str, port: int, limit_s: float = 15.0) -> None:
        """Until the agent's link port no longer accepts (its container is gone): the
        slot, and so the port, may go to the next session on the same node at once."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, TimeoutError):
                return  # refused (closed) or unreachable (the node is gone)
            writer.close()
            await asyncio.sleep(0.2)
        logger.warning("session %s: %s:%d still accepts %.0f s after the service was removed",
                       sid, host, port, limit_s)

    def _running(self, service: str) -> bool:
        task = self._task(service)
        return task is not None and task["Status"]["State"] == _RUNNING

    def _remove_all(self, service: str, secrets: list[str]) -> None:
        self._remove_service(service)
        deadline = time.monotonic() + 20
        for name in secrets:
            while not self._remove_secret(name) and time.monotonic() < deadline:
                time.sleep(0.3)  # in use until the task's container is gone

    def _remove_service(self, name: str) -> None:
        try:
            self._client.api.remove_service(name)
        except docker.errors.NotFound:
            pass

    def _remove_secret(self, name: str) -> bool:
        try:
            self._client.api.remove_secret(name)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as e:
            if "in use" in str(e.explanation or e):
                return False
            raise
        return True

    async def list_pods(self) -> list[str]:
        def find() -> list[str]:
            label = f"{LABEL_GATEWAY}={self._gw}"
            ids = {s["Spec"].get("Labels", {}).get(LABEL_SESSION, "") for s in
                   self._client.api.services(filters={"label": label})}
            ids.update(s["Spec"].get("Labels", {}).get(LABEL_SESSION, "") for s in
                       self._client.api.secrets(filters={"label": label}))
            ids.discard("")
            return sorted(ids)

        return await asyncio.to_thread(find)

    async def stop_leftover(self, session_id: str, session_dir: Path, runtime_dir: Path) -> None:
        await asyncio.to_thread(self._remove_all, self._name(session_id, "pod"),
                                [self._name(session_id, "secret"), self._name(session_id, "tls")])

    def agent_socket(self, handle: PodHandle) -> Path:
        raise BackendError("swarm pods are reached over TCP (agent_endpoint)")

    def agent_endpoint(self, handle: PodHandle) -> AgentEndpoint:
        return AgentEndpoint(host=handle["host"], port=int(handle["port"]),
                             secret=handle["secret"], cert_pem=handle["cert"],
                             ice_addresses=tuple(handle.get("ice_addresses") or ()))

    def files_dir(self, handle: PodHandle) -> Path:
        return session_paths(Path(handle["session_dir"]), Path(handle["runtime_dir"]))["files"]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for mirror in list(self._mirrors.values()):
            await mirror.aclose()
        self._mirrors.clear()
        await asyncio.to_thread(self._client.close)


def _parse_constraint(text: str) -> tuple[str, str, str]:
    for op in ("==", "!="):
        if op in text:
            key, value = text.split(op, 1)
            return key.strip(), op, value.strip()
    raise BackendError(f"cannot read the placement constraint {text!r} (KEY==VALUE or KEY!=VALUE)")
