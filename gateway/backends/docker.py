"""The ``docker`` backend: each pod is two containers from the session image.

The pod model is the ``local`` backend's (see ``local.py``), with Docker doing
the isolation:

* **App container** (``vr-<gw>-<sid>-app``): the desktop (Xvfb, fluxbox, xterm,
  Chromium) as the pod's first uid (``uid_base + 2·slot``, the local backend's
  reserved range; label ``visual-runtime.uid``). ``cap_drop=ALL``, ``no-new-privileges``, a seccomp
  profile passed as JSON content (Docker's default plus ``clone``, ``unshare``
  and ``chroot`` so that Chromium keeps its own sandbox:
  ``container/seccomp-chromium.json``), a read-only root with tmpfs ``/tmp``
  and ``HOME``, a 256 MB ``/dev/shm``, memory, CPU and pids limits. Its IPC
  namespace is ``shareable`` (for the agent's XShm). Network: ``none``, or for
  ``egress`` a bridge network of its own (see *Egress* below).
* **Runtime-agent container** (``vr-<gw>-<sid>-agent``): the same image as
  the pod's second uid running ``python -m agent_side``, in the app container's IPC
  namespace, seeing the X socket folder and its run folder ``/run/vr`` (bind
  mounts of host folders, so the gateway reaches its unix socket exactly as
  with ``local``). It uses the **host network**: aiortc must offer ICE
  candidates that viewers can reach, and a bridge would only give it a private
  address (plus a published UDP range and NAT rewriting that aiortc cannot
  announce). Its HTTP API listens only on the unix socket, never on TCP.

Folders (host → container), as ``session_paths`` lays them out:
``<runtime>/<sid>/x11`` → ``/tmp/.X11-unix`` (both), ``<runtime>/<sid>/run`` →
``/run/vr`` (agent), ``<state>/sessions/<sid>/recording`` → ``/run/vr-recording``
(agent, when recording), ``<state>/sessions/<sid>/home/Downloads`` →
``/home/user/Downloads`` (app, its uid: the shared folder), and the files
``logs/app.log`` / ``logs/agent.log`` → ``/var/log/visual-runtime/*.log``, so
the containers' output lands in the session log while they run and survives
them. Everything a container writes elsewhere dies with it.

Egress (``network: "egress"``): a bridge ``vr-<gw>-<sid>`` with interface
``vrd<hash>``, ``enable_icc=false`` and NAT out. Two chains of ours:
``VR-DOCKER-IN`` (hooked into ``INPUT`` for ``vrd+``) drops everything a
session sends to the host's own addresses, so the gateway and any other host
service are unreachable; ``VR-DOCKER-FWD`` (hooked into Docker's
``DOCKER-USER``) drops traffic from a session to another session's bridge,
to Docker's other bridges (``docker0``, ``br-*``), to the ``local`` backend's
sessions (``vrh+``) and to link-local addresses (cloud metadata). The chains
are made idempotently on the first egress session and left in place (they
match only ``vrd+`` interfaces; other gateways on the host share them).
``--egress-deny`` (private LAN/VPC ranges, metadata addresses) is a chain of
each session's own, ``VR-DENY-vrd<hash>``, hooked first in ``FORWARD`` and
``DOCKER-USER`` for its bridge before the bridge exists, as ``network.py``
does for the local backend; it goes when the session stops.

Ownership is by label: ``visual-runtime.session``, ``visual-runtime.role``
(``app``, ``agent``, ``network``) and ``visual-runtime.gateway`` (a hash of the
state dir), so two gateways on one engine never touch each other's pods and a
restarted gateway finds its own (``list_pods``; the manager re-adopts them
through ``is_alive`` and the agent's health).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import Mount

from ..config import GatewayConfig
from ..errors import BackendError
from .base import (
    PodHandle,
    PodRequest,
    SessionBackend,
    prepare_session_dirs,
    session_paths,
    start_step,
    viewer_limit_args,
)
from .cgroup import limit_events_of
from .devtools import POD_DIR, POD_SOCKET, host_cdp_dir, prepare_cdp_dir
from .docker_runtime import describe_registration, registered_runtime
from .local import LocalBackend, _describe_status
from .network import Egress, EgressManager, run
from .sandbox import AGENT_RECORDING, chromium_flags
from .session_disk import DiskWatch, check_support, create_disk
from .uidrange import UidRangeError, pod_range, reserve_range
from .xauth import XAUTHORITY_IN_POD

logger = logging.getLogger(__name__)

HOME = "/home/user"
AGENT_RUN = "/run/vr"
LOG_DIR = "/var/log/visual-runtime"
LABEL_SESSION = "visual-runtime.session"
LABEL_ROLE = "visual-runtime.role"
LABEL_GATEWAY = "visual-runtime.gateway"
LABEL_UID = "visual-runtime.uid"
"""The container's uid (app: the pod's first, agent: its second), for re-adoption."""
BRIDGE_PREFIX = "vrd"
CHAIN_IN = "VR-DOCKER-IN"
CHAIN_FWD = "VR-DOCKER-FWD"
AGENT_MEMORY = 1024 * 1024 * 1024
AGENT_CPUS = 1.5
AGENT_PIDS = 256
_HOOKS = [
    ("INPUT", ["-i", BRIDGE_PREFIX + "+", "-j", CHAIN_IN]),
    ("DOCKER-USER", ["-i", BRIDGE_PREFIX + "+", "-j", CHAIN_FWD]),
]


def default_seccomp_profile() -> Path:
    """``container/seccomp-chromium.json`` of this checkout (or image)."""
    return Path(__file__).resolve().parents[2] / "container" / "seccomp-chromium.json"


def gateway_label(state_dir: Path) -> str:
    """Ownership label value: a short hash of the state dir's absolute path."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


class DockerBackend(SessionBackend):
    """Pods as two containers per session, through the docker SDK (blocking calls in threads)."""

    name = "docker"

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._gw = gateway_label(config.state_dir)
        profile = config.docker_seccomp_profile or default_seccomp_profile()
        try:
            self._seccomp = json.dumps(json.loads(profile.read_text()), separators=(",", ":"))
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot read the seccomp profile {profile}: {e}") from e
        try:
            self._client = docker.from_env(timeout=60)
            self._client.ping()
        except docker.errors.DockerException as e:
            raise BackendError(f"the docker engine is not reachable: {e}") from e
        self._runtime = registered_runtime(self._client, config.docker_runtime)
        logger.info("docker app containers run on %s", describe_registration(self._runtime))
        self._disks = DiskWatch()
        if config.session_disk_mb and (why := check_support()):
            raise BackendError(f"no per-session disk: {why}; or set --session-disk-mb 0")
        try:  # the pods' uids: the local backend's reserved range (uidrange.py)
            if reserve_range(config.uid_base):
                start, count = pod_range(config.uid_base)
                logger.info("reserved uids %d-%d for the pods in /etc/subuid and /etc/subgid",
                            start, start + count - 1)
        except UidRangeError as e:
            raise BackendError(f"cannot reserve the pods' uids: {e}") from None
        except OSError as e:  # a read-only /etc (the gateway image): `doctor` reports it
            logger.warning("could not record the pods' uid range in /etc/subuid and "
                           "/etc/subgid (%s)", e)
        self._rules_lock = asyncio.Lock()
        self._rules_ready = False
        self._egress = EgressManager(config.egress_deny)
        self._closed = False

    # ----------------------------------------------------------------- names
    def _name(self, sid: str, role: str) -> str:
        return f"vr-{self._gw[:8]}-{sid}-{role}"

    def _labels(self, sid: str, role: str) -> dict[str, str]:
        return {LABEL_SESSION: sid, LABEL_ROLE: role, LABEL_GATEWAY: self._gw}

    @staticmethod
    def _bridge(sid: str) -> str:
        return BRIDGE_PREFIX + hashlib.sha256(sid.encode()).hexdigest()[:11]

    def _deny_target(self, sid: str) -> Egress:
        """The session's bridge as :class:`EgressManager` names a link (``VR-DENY-vrd…``)."""
        return Egress(netns="", host_if=self._bridge(sid), host_ip="", sandbox_ip="")

    # ----------------------------------------------------------------- start
    async def start_pod(self, request: PodRequest) -> PodHandle:
        sid = request.session_id
        handle: PodHandle = {
            "session_id": sid,
            "session_dir": str(request.session_dir),
            "runtime_dir": str(request.runtime_dir),
            "network": request.spec.network,
            "app": self._name(sid, "app"),
            "agent": self._name(sid, "agent"),
            "net": self._name(sid, "net") if request.spec.network == "egress" else None,
            "image": self._config.docker_image,
            # Two uids of the reserved range per slot, as the local backend allocates
            # them: the slot (and so the pair) is the session's until it ends.
            "uid_app": self._config.uid_base + request.slot * 2,
            "uid_agent": self._config.uid_base + request.slot * 2 + 1,
        }
        await self._start_or_clean_up(handle, lambda: self._start(request, handle))
        return handle

    def _error_message(self, error: Exception) -> str:
        if isinstance(error, docker.errors.DockerException):
            return f"docker: {_docker_message(error)}"
        return str(error)

    async def _start(self, request: PodRequest, handle: PodHandle) -> None:
        sid = request.session_id
        await start_step(self._prepare_dirs, request, handle)
        if handle["net"]:
            await self._ensure_rules()
            # --egress-deny: the session's own chain, hooked before its bridge exists
            await self._egress.deny(self._deny_target(sid), self._config.egress_deny)
            await start_step(self._create_network, sid, handle["net"])
        t0 = time.monotonic()
        app = await start_step(self._run_app, request, handle)
        spans = {"spawn_app": (time.monotonic() - t0) * 1000, "disk": handle.pop("disk_ms", 0.0)}
        logger.info("session %s: app container %s (%s)", sid, handle["app"], app.short_id)
        # The runtime agent starts beside Xvfb, not after it (it waits for the X socket).
        t0 = time.monotonic()
        agent = await start_step(self._run_agent, request, handle, app.id)
        spans["spawn_agent"] = (time.monotonic() - t0) * 1000
        handle["spans"] = spans
        logger.info("session %s: runtime-agent container %s (%s)", sid, handle["agent"],
                    agent.short_id)

    def _prepare_dirs(self, request: PodRequest, handle: PodHandle) -> None:
        uid_app, uid_agent = handle["uid_app"], handle["uid_agent"]
        # The shared folder (bound into the app container) lies on the session's disk.
        handle["disk_ms"] = create_disk(request.session_dir, self._config.session_disk_mb, uid_app)
        paths = prepare_session_dirs(request, uid_app, uid_agent)
        prepare_cdp_dir(request.runtime_dir, uid_app, uid_agent)
        # The image knows only its own users; name the pod's uids (bash, xterm, Chromium).
        pod = request.session_dir / "pod"
        pod.mkdir(exist_ok=True)
        (pod / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"user:x:{uid_app}:{uid_app}:Visual Runtime:{HOME}:/bin/bash\n"
            f"agent:x:{uid_agent}:{uid_agent}:Runtime agent:/nonexistent:/usr/sbin/nologin\n")
        (pod / "group").write_text(f"root:x:0:\nuser:x:{uid_app}:\nagent:x:{uid_agent}:\n")
        for name, uid in (("app.log", uid_app), ("agent.log", uid_agent)):
            log = paths["logs"] / name
            log.touch()
            os.chown(log, uid, uid)
            log.chmod(0o640)

    def _create_network(self, sid: str, name: str) -> None:
        self._remove_network(name)
        self._client.networks.create(
            name, driver="bridge", internal=False, labels=self._labels(sid, "network"),
            options={
                "com.docker.network.bridge.name": self._bridge(sid),
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
            },
        )
        logger.info("session %s: egress network %s (bridge %s)", sid, name, self._bridge(sid))

    def _common(self, sid: str, role: str, uid: int) -> dict[str, Any]:
        return {
            "image": self._config.docker_image,
            "name": self._name(sid, role),
            "labels": self._labels(sid, role) | {LABEL_UID: str(uid)},
            "user": f"{uid}:{uid}",
            "detach": True,
            "read_only": True,
            "cap_drop": ["ALL"],
            "init": False,  # the image's entry point is tini
            "log_config": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}},
            "stdin_open": False,
            "tty": False,
        }

    def _run_app(self, request: PodRequest, handle: PodHandle) -> Container:
        sid = request.session_id
        paths = session_paths(request.session_dir, request.runtime_dir)
        w, h = request.spec.resolution
        uid_app = handle["uid_app"]
        self._remove_container(handle["app"])
        # Egress sessions get no IPv6, not even a link-local address that would reach
        # host services listening on [::] through the session's bridge.
        net: dict[str, Any] = ({"network": handle["net"],
                                "sysctls": {"net.ipv6.conf.all.disable_ipv6": "1",
                                            "net.ipv6.conf.default.disable_ipv6": "1"}}
                               if handle["net"] else {"network_mode": "none"})
        container = self._client.containers.run(
            command=["app"],
            security_opt=["no-new-privileges", f"seccomp={self._seccomp}"],
            tmpfs={
                # Chromium's shared memory and profile live here; both count as memory.
                "/tmp": "rw,nosuid,nodev,size=512m,mode=1777",
                HOME: f"rw,nosuid,nodev,size=1g,uid={uid_app},gid={uid_app},mode=0700",
            },
            shm_size=256 * 1024 * 1024,
            ipc_mode="shareable",
            mem_limit=self._config.session_memory_mb * 1024 * 1024,
            memswap_limit=self._config.session_memory_mb * 1024 * 1024,
            nano_cpus=int(self._config.session_cpus * 1e9),
            pids_limit=self._runtime.host_pids_limit(self.pids_limit(self._config.session_pids)),
            hostname="visual-runtime",
            mounts=[
                Mount("/tmp/.X11-unix", str(paths["x11"]), type="bind"),
                Mount(XAUTHORITY_IN_POD, str(paths["xauth"]), type="bind", read_only=True),
                Mount(f"{HOME}/Downloads", str(paths["files"]), type="bind"),
                Mount(POD_DIR, str(host_cdp_dir(request.runtime_dir)), type="bind"),
                Mount(f"{LOG_DIR}/app.log", str(paths["logs"] / "app.log"), type="bind"),
                Mount("/etc/passwd", str(request.session_dir / "pod" / "passwd"), type="bind",
                      read_only=True),
                Mount("/etc/group", str(request.session_dir / "pod" / "group"), type="bind",
                      read_only=True),
            ],
            environment={
                "HOME": HOME,
                "USER": "user",
                "XAUTHORITY": XAUTHORITY_IN_POD,
                "VR_ROLE": "app",
                "VR_SESSION_ID": sid,
                "VR_RESOLUTION": f"{w}x{h}",
                "VR_APPS": " ".join(self._config.apps),
                "VR_START_URL": request.spec.start_url or "about:blank",
                "VR_CHROMIUM_FLAGS": " ".join(chromium_flags(w, h)),
                "VR_LOG_FILE": f"{LOG_DIR}/app.log",
                "VR_AGENT_UID": str(handle["uid_agent"]),  # the DevTools relay's one peer
            },
            **net,
            **self._runtime.app_options(),
            **self._common(sid, "app", uid_app),
        )
        return container

    def _run_agent(self, request: PodRequest, handle: PodHandle, app_id: str) -> Container:
        sid = request.session_id
        paths = session_paths(request.session_dir, request.runtime_dir)
        w, h = request.spec.resolution
        self._remove_container(handle["agent"])
        command = ["agent", "--socket", f"{AGENT_RUN}/agent.sock", "--display", ":0",
                   "--resolution", f"{w}x{h}", f"--session-id={sid}"]
        if self._config.ice_port_min and self._config.ice_port_max:
            command += ["--ice-ports", f"{self._config.ice_port_min}-{self._config.ice_port_max}"]
        if "chromium" in self._config.apps:
            command += ["--cdp-socket", POD_SOCKET]
        if request.pooled:
            command.append("--pooled")
        mounts = [
            Mount("/tmp/.X11-unix", str(paths["x11"]), type="bind"),
            Mount(XAUTHORITY_IN_POD, str(paths["xauth"]), type="bind", read_only=True),
            Mount(AGENT_RUN, str(paths["run"]), type="bind"),
            Mount(POD_DIR, str(host_cdp_dir(request.runtime_dir)), type="bind"),
            Mount(f"{LOG_DIR}/agent.log", str(paths["logs"] / "agent.log"), type="bind"),
        ]
        command += viewer_limit_args(self._config)
        if request.spec.enable_recording:
            command += ["--recording", AGENT_RECORDING,
                        "--recording-min-free-mb", str(self._config.recording_min_free_mb)]
            mounts.append(Mount(AGENT_RECORDING, str(request.session_dir / "recording"),
                                type="bind"))
        return self._client.containers.run(
            command=command,
            security_opt=["no-new-privileges"],
            tmpfs={"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"},
            ipc_mode=self._runtime.agent_ipc_mode(app_id),
            network_mode="host",
            mem_limit=AGENT_MEMORY,
            memswap_limit=AGENT_MEMORY,
            nano_cpus=int(AGENT_CPUS * 1e9),
            pids_limit=AGENT_PIDS,
            mounts=mounts,
            environment={
                "HOME": "/tmp",
                "DISPLAY": ":0",
                "XAUTHORITY": XAUTHORITY_IN_POD,
                "VR_ROLE": "agent",
                "VR_SESSION_ID": sid,
                "VR_LOG_FILE": f"{LOG_DIR}/agent.log",
            },
            **self._common(sid, "agent", handle["uid_agent"]),
        )

    # ----------------------------------------------------------------- state
    def _adopt_uids(self, handle: PodHandle) -> None:
        """Take the pod's uids from its containers' labels (they keep them until removed)."""
        for role in ("app", "agent"):
            try:
                labels = self._client.api.inspect_container(handle[role])["Config"]["Labels"]
            except docker.errors.NotFound:
                continue
            if labels.get(LABEL_UID, "").isdigit():
                handle[f"uid_{role}"] = int(labels[LABEL_UID])

    def _status(self, name: str) -> str:
        try:
            info = self._client.api.inspect_container(name)
        except docker.errors.NotFound:
            return "missing"
        return str(info["State"]["Status"])

    async def is_alive(self, handle: PodHandle) -> bool:
        def check() -> bool:
            if "uid_app" not in handle:  # a handle of an older gateway: the labels tell
                self._adopt_uids(handle)
            return all(self._status(handle[role]) == "running" for role in ("app", "agent"))

        try:
            return await asyncio.to_thread(check)
        except docker.errors.DockerException as e:
            logger.warning("session %s: docker inspect failed: %s", handle.get("session_id"), e)
            return False

    def pids_limit(self, configured: int) -> int:
        return max(512, configured)  # Chromium's processes and threads need this many

    async def resource_events(self, handle: PodHandle) -> dict[str, int]:
        """From the app container's cgroup while it runs; ``OOMKilled`` once it died."""
        def read() -> dict[str, int]:
            try:
                state = self._client.api.inspect_container(handle["app"])["State"]
            except docker.errors.DockerException:
                return {}
            counts = limit_events_of(int(state.get("Pid") or 0)) if state.get("Pid") else {}
            if state.get("OOMKilled"):
                counts["memory"] = max(counts.get("memory", 0), 1)
            return counts | self._disks.events(handle["session_id"], Path(handle["session_dir"]))

        return await asyncio.to_thread(read)

    async def exit_reason(self, handle: PodHandle) -> str:
        def read() -> str:
            parts = []
            for role, key in (("the app sandbox", "app"), ("the runtime agent", "agent")):
                try:
                    state = self._client.api.inspect_container(handle[key])["State"]
                except docker.errors.NotFound:
                    parts.append(f"{role} container is gone")
                    continue
                except docker.errors.DockerException:
                    continue
                if state.get("Status") == "running":
                    continue
                how = (" (OOM-killed)" if state.get("OOMKilled")
                       else _describe_status(int(state.get("ExitCode") or 0)))
                parts.append(f"{role} exited{how}")
            return "; ".join(parts) or "the session's processes exited"

        return await asyncio.to_thread(read)

    # ------------------------------------------------------------------ stop
    async def stop_pod(self, handle: PodHandle) -> None:
        sid = handle["session_id"]
        await asyncio.to_thread(self._stop_containers, sid, Path(handle["session_dir"]),
                                [handle["agent"], handle["app"]])
        if handle.get("net"):
            await asyncio.to_thread(self._remove_network, handle["net"])
            await self._egress.undeny(self._deny_target(sid))
        await asyncio.to_thread(LocalBackend._remove_runtime_dirs, Path(handle["session_dir"]),
                                Path(handle["runtime_dir"]))
        logger.info("session %s: pod removed", sid)

    def _stop_containers(self, sid: str, session_dir: Path, names: list[str]) -> None:
        """Agent first and gently (it closes peers, finishes the recording), then the app."""
        for name in names:
            try:
                container = self._client.containers.get(name)
            except docker.errors.NotFound:
                continue
            role = container.labels.get(LABEL_ROLE, "app")
            try:
                if container.status == "running":
                    # The agent may be finalising the recording (as with local: 5 s).
                    container.stop(timeout=5 if role == "agent" else 1)
            except docker.errors.APIError as e:
                logger.warning("session %s: stopping %s failed: %s", sid, name, _docker_message(e))
            self._save_docker_log(sid, container, session_dir / "logs" / f"{role}.log")
            self._remove_container(name)

    @staticmethod
    def _save_docker_log(sid: str, container: Container, log: Path) -> None:
        """Whatever a container printed before its output went to the bound log file."""
        try:
            out = container.logs(stdout=True, stderr=True, tail=200)
        except docker.errors.APIError:
            return
        if out and log.parent.is_dir():
            with open(log, "ab") as f:
                f.write(b"--- docker log of " + container.name.encode() + b" ---\n" + out)
            logger.debug("session %s: saved %d bytes of docker log", sid, len(out))

    def _remove_container(self, name: str) -> None:
        try:
            self._client.api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # removal already in progress
                raise

    def _remove_network(self, name: str) -> None:
        try:
            self._client.api.remove_network(name)
        except docker.errors.NotFound:
            pass

    async def list_pods(self) -> list[str]:
        def find() -> list[str]:
            label = f"{LABEL_GATEWAY}={self._gw}"
            ids = {c.labels.get(LABEL_SESSION, "") for c in
                   self._client.containers.list(all=True, filters={"label": label})}
            ids.update(n.attrs.get("Labels", {}).get(LABEL_SESSION, "") for n in
                       self._client.networks.list(filters={"label": label}))
            ids.discard("")
            return sorted(ids)

        return await asyncio.to_thread(find)

    async def stop_leftover(self, session_id: str, session_dir: Path, runtime_dir: Path) -> None:
        """Remove the containers and network of a pod whose handle was lost."""
        await self.stop_pod({
            "session_id": session_id, "session_dir": str(session_dir),
            "runtime_dir": str(runtime_dir), "app": self._name(session_id, "app"),
            "agent": self._name(session_id, "agent"), "net": self._name(session_id, "net"),
        })

    def agent_socket(self, handle: PodHandle) -> Path:
        return session_paths(Path(handle["session_dir"]), Path(handle["runtime_dir"]))["run"] / "agent.sock"

    def files_dir(self, handle: PodHandle) -> Path:
        return session_paths(Path(handle["session_dir"]), Path(handle["runtime_dir"]))["files"]

    # -------------------------------------------------------------- firewall
    async def _ensure_rules(self) -> None:
        async with self._rules_lock:
            if self._rules_ready:
                return
            for chain in (CHAIN_IN, CHAIN_FWD):
                await run("iptables", "-w", "-N", chain, check=False)
                await run("iptables", "-w", "-F", chain)
            await run("iptables", "-w", "-A", CHAIN_IN, "-j", "DROP")
            fwd = ("iptables", "-w", "-A", CHAIN_FWD)
            for out_if in (BRIDGE_PREFIX + "+", "docker0", "br-+", "vrh+"):
                await run(*fwd, "-o", out_if, "-j", "DROP")
            await run(*fwd, "-d", "169.254.0.0/16", "-j", "DROP")
            await run(*fwd, "-j", "RETURN")
            # DOCKER-USER exists once dockerd has started with iptables enabled.
            code, _ = await run("iptables", "-w", "-L", "DOCKER-USER", "-n", check=False)
            if code != 0:
                raise BackendError("iptables chain DOCKER-USER is missing (is dockerd running "
                                   "with iptables enabled?)")
            for chain, spec in _HOOKS:
                code, _ = await run("iptables", "-w", "-C", chain, *spec, check=False)
                if code != 0:
                    await run("iptables", "-w", "-I", chain, "1", *spec)
            self._rules_ready = True

    async def aclose(self) -> None:
        """Close the client. The firewall chains stay: they match only ``vrd+``
        interfaces, and another gateway on this host may be using them."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._client.close)


def _docker_message(e: docker.errors.DockerException) -> str:
    if isinstance(e, docker.errors.APIError):
        return str(e.explanation or e)
    return str(e)


def _tail(path: Path, limit: int = 600) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return "(no log)"
    return data.decode(errors="replace").strip() or "(empty log)"
