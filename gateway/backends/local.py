"""The ``local`` backend: each pod is two bubblewrap sandboxes, no daemon.

* App sandbox: own pid, ipc, uts, mount (and, for ``network: "none"``, net)
  namespaces; egress sessions run in a per-session network namespace (see
  ``network.py``). Read-only /usr and /etc, private /tmp, /dev/shm and HOME,
  an unprivileged uid of its own with no capabilities and no-new-privs, and a
  cgroup with memory, CPU and pids limits. It runs Xvfb, then fluxbox, xterm
  and Chromium.
* Runtime agent: a second sandbox in the host network namespace (viewers must
  reach its ICE candidates), joined to the app sandbox's IPC namespace for
  XShm, seeing only the X socket folder, its run folder and the Python it
  needs, as another unprivileged uid, in a cgroup of its own.

What each sandbox sees and runs is ``sandbox.py``; this module starts, watches,
restarts and stops them.

Processes are started in their own process groups so that they outlive a
crashed gateway; the next gateway re-adopts them (``is_alive``) or removes
them (``stop_pod``) using the pids and start times kept in the handle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..config import GatewayConfig
from ..errors import BackendError
from .base import (
    PodHandle,
    PodRequest,
    SessionBackend,
    prepare_session_dirs,
    session_paths,
    start_step,
)
from .cgroup import Cgroup, list_cgroups
from .devtools import (
    prepare_cdp_dir,
)
from .network import (
    NETNS_PREFIX,
    Egress,
    EgressManager,
    create_namespace,
    delete_namespace,
    list_namespaces,
    resolv_conf,
)
from .sandbox import (
    FLUXBOX_INIT,
    PROJECT_ROOT,
    SANDBOX_HOME,
    agent_argv,
    agent_python_dirs,
    app_argv,
    check_agent_can_read,
    chromium_flags,
    launcher,
)
from .seccomp import SECCOMP_FD, bpf_fd, local_program
from .session_disk import DiskWatch, check_support, create_disk, release_disk
from .uidrange import UidRangeError, pod_range, reserve_range

logger = logging.getLogger(__name__)

_CGROUP_WRAPPER = (
    'IFS=:; for f in $VR_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; '
    'unset VR_CGROUP_PROCS IFS; exec "$@"'
)
def _process_start_time(pid: int) -> int | None:
    """Start time of *pid* in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: object, start: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    return _process_start_time(pid) == start


class LocalBackend(SessionBackend):
    """bubblewrap + cgroups + network namespaces."""

    name = "local"
    network_at_claim = True

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._egress = EgressManager(config.egress_deny)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._exit_codes: dict[int, int] = {}
        """Exit status of reaped children by pid (Popen's: negative = killed by that signal)."""
        for tool in ("bwrap", "setpriv", "nsenter", "Xvfb"):
            if shutil.which(tool) is None:
                raise BackendError(f"the local backend needs {tool!r} (run scripts/setup.sh)")
        check_agent_can_read(agent_python_dirs())
        self._disks = DiskWatch()
        if config.session_disk_mb and (why := check_support()):
            raise BackendError(f"no per-session disk: {why}; or set --session-disk-mb 0")
        local_program()  # compile the seccomp filter now: a broken one fails the start
        try:
            if reserve_range(config.uid_base):
                start, count = pod_range(config.uid_base)
                logger.info("reserved uids %d-%d for the pods in /etc/subuid and /etc/subgid",
                            start, start + count - 1)
        except UidRangeError as e:
            raise BackendError(f"cannot reserve the pods' uids: {e}") from None
        except OSError as e:  # a read-only /etc: no one else's range overlaps, go on
            logger.warning("could not record the pods' uid range in /etc/subuid and "
                           "/etc/subgid (%s); `visual-runtime doctor` reports it", e)
        _compile_agent_code()

    # ----------------------------------------------------------------- start
    async def start_pod(self, request: PodRequest) -> PodHandle:
        sid = request.session_id
        uid_app = self._config.uid_base + request.slot * 2
        handle: PodHandle = {
            "session_id": sid,
            "session_dir": str(request.session_dir),
            "runtime_dir": str(request.runtime_dir),
            "uid_app": uid_app,
            "uid_agent": uid_app + 1,
            "network": request.spec.network,
            "egress": None,
            "netns": None,
            "pooled": request.pooled,
        }
        await self._start_or_clean_up(handle, lambda: self._start(request, handle))
        return handle

    async def _start(self, request: PodRequest, handle: PodHandle) -> None:
        sid = request.session_id
        spec = request.spec
        paths = session_paths(request.session_dir, request.runtime_dir)
        t0 = time.monotonic()
        await start_step(self._prepare_dirs, request, handle)
        egress: Egress | None = None
        if request.pooled:
            # An empty namespace now; a claim for an egress session connects it.
            handle["netns"] = NETNS_PREFIX + sid
            await delete_namespace(handle["netns"])
            await create_namespace(handle["netns"])
        elif spec.network == "egress":
            egress = Egress.for_slot(sid, request.slot)
            handle["egress"] = {"netns": egress.netns, "host_if": egress.host_if,
                                "host_ip": egress.host_ip, "sandbox_ip": egress.sandbox_ip}
            await self._egress.create(egress)
        mem = self._config.session_memory_mb * 1024 * 1024
        app_cg, agent_cg = Cgroup(f"{sid}.app"), Cgroup(f"{sid}.agent")
        await start_step(app_cg.create, mem, self._config.session_cpus,
                         self._config.session_pids)
        await start_step(agent_cg.create, 1024 * 1024 * 1024, 1.5, 256)

        spans = {"prepare": (time.monotonic() - t0) * 1000, "disk": handle.pop("disk_ms", 0.0)}
        t0 = time.monotonic()
        app_cmd = app_argv(request, handle, egress)
        pid, start, ns_pid = await start_step(
            self._spawn, app_cmd, app_cg, paths["logs"] / "app.log", True
        )
        handle.update(app_pid=pid, app_start=start, app_ns_pid=ns_pid)
        spans["spawn_app"] = (time.monotonic() - t0) * 1000
        logger.info("session %s: app sandbox pid %d (ns init %d)", sid, pid, ns_pid)

        # The runtime agent starts now, beside Xvfb rather than after it: its imports
        # (~0.5 s) overlap the X server's start, and it waits for the X socket itself.
        t0 = time.monotonic()
        agent_cmd = agent_argv(self._config, request, handle, ns_pid)
        apid, astart, _ = await start_step(
            self._spawn, agent_cmd, agent_cg, paths["logs"] / "agent.log", False
        )
        handle.update(agent_pid=apid, agent_start=astart)
        spans["spawn_agent"] = (time.monotonic() - t0) * 1000
        handle["spans"] = spans
        logger.info("session %s: runtime agent pid %d", sid, apid)

    async def claim_pod(self, handle: PodHandle, request: PodRequest) -> None:
        if request.spec.network == "egress":
            egress = Egress.for_slot(request.session_id, request.slot)
            await self._egress.connect(egress)
            handle["egress"] = {"netns": egress.netns, "host_if": egress.host_if,
                                "host_ip": egress.host_ip, "sandbox_ip": egress.sandbox_ip}
        handle["network"] = request.spec.network
        if not request.spec.enable_recording:
            (request.session_dir / "recording").rmdir()  # empty: nothing recorded yet

    async def memory_bytes(self, handle: PodHandle) -> int | None:
        sid = handle["session_id"]
        total = 0
        for name in (f"{sid}.app", f"{sid}.agent"):
            used = await asyncio.to_thread(Cgroup(name).memory_current)
            if used is None:
                return None
            total += used
        return total

    def _prepare_dirs(self, request: PodRequest, handle: PodHandle) -> None:
        uid_app, uid_agent = handle["uid_app"], handle["uid_agent"]
        handle["disk_ms"] = create_disk(request.session_dir, self._config.session_disk_mb, uid_app)
        paths = prepare_session_dirs(request, uid_app, uid_agent)
        fluxbox = paths["home"] / ".fluxbox"
        fluxbox.mkdir(exist_ok=True)
        (fluxbox / "init").write_text(FLUXBOX_INIT)
        (fluxbox / "overlay").write_text("background: none\n")
        for p in (paths["home"], fluxbox, *fluxbox.iterdir()):
            os.chown(p, uid_app, uid_app)
        pod = request.session_dir / "pod"
        pod.mkdir(exist_ok=True)
        w, h = request.spec.resolution
        (pod / "launch.sh").write_text(
            launcher(w, h, self._config.apps, request.spec.start_url, chromium_flags(w, h),
                      uid_agent)
        )
        prepare_cdp_dir(request.runtime_dir, uid_app, uid_agent)
        (pod / "launch.sh").chmod(0o755)
        (pod / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"user:x:{uid_app}:{uid_app}:Visual Runtime:{SANDBOX_HOME}:/bin/bash\n"
            f"agent:x:{uid_agent}:{uid_agent}:Runtime agent:/nonexistent:/usr/sbin/nologin\n"
        )
        (pod / "group").write_text(f"root:x:0:\nuser:x:{uid_app}:\nagent:x:{uid_agent}:\n")
        (pod / "hostname").write_text("visual-runtime\n")
        (pod / "resolv.conf").write_text(resolv_conf())

    def _spawn(self, argv: list[str], cgroup: Cgroup, log_path: Path,
               info_fd: bool) -> tuple[int, int, int]:
        """Start *argv* inside *cgroup*, detached; return (pid, start time, ns init pid)."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "VR_CGROUP_PROCS": ":".join(str(p) for p in cgroup.procs_files)}
        read_fd, write_fd = os.pipe() if info_fd else (-1, -1)
        bpf = bpf_fd(local_program())  # every sandbox gets the seccomp filter
        argv = [a.replace("{info_fd}", str(write_fd)).replace(SECCOMP_FD, str(bpf)) for a in argv]
        full = ["/bin/sh", "-c", _CGROUP_WRAPPER, "vr-pod", *argv]
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                full, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(write_fd, bpf) if info_fd else (bpf,),
            )
        finally:
            log.close()
            os.close(bpf)
            if info_fd:
                os.close(write_fd)
        self._children[proc.pid] = proc
        start = _process_start_time(proc.pid)
        ns_pid = 0
        if info_fd:
            with os.fdopen(read_fd, "rb") as reader:
                raw = reader.read()
            try:
                ns_pid = int(json.loads(raw)["child-pid"])
            except (ValueError, KeyError) as e:
                raise BackendError("bubblewrap did not start: " + _tail(log_path)) from e
        if start is None:
            raise BackendError(f"{argv[0]} exited at once: " + _tail(log_path))
        return proc.pid, start, ns_pid

    # ----------------------------------------------------------------- state
    async def is_alive(self, handle: PodHandle) -> bool:
        self._reap()
        return _alive(handle.get("app_pid"), handle.get("app_start")) and _alive(
            handle.get("agent_pid"), handle.get("agent_start")
        )

    def _reap(self) -> None:
        # runs on the loop and in stop threads at once: tolerate a child reaped meanwhile
        for pid, proc in list(self._children.items()):
            code = proc.poll()
            if code is not None:
                self._children.pop(pid, None)
                self._exit_codes[pid] = code
        while len(self._exit_codes) > 256:
            try:
                del self._exit_codes[next(iter(self._exit_codes))]
            except (KeyError, StopIteration, RuntimeError):  # trimmed by another thread
                break

    async def restart_agent(self, handle: PodHandle, request: PodRequest) -> None:
        sid = handle["session_id"]
        if not _alive(handle.get("app_pid"), handle.get("app_start")):
            raise BackendError("the app sandbox exited as well")
        agent_cg = Cgroup(f"{sid}.agent")
        await asyncio.to_thread(agent_cg.kill_all)  # what the dead agent left (x11vnc...)
        paths = session_paths(request.session_dir, request.runtime_dir)
        argv = agent_argv(self._config, request, handle, int(handle["app_ns_pid"]))
        apid, astart, _ = await asyncio.to_thread(
            self._spawn, argv, agent_cg, paths["logs"] / "agent.log", False)
        handle.update(agent_pid=apid, agent_start=astart)
        logger.info("session %s: runtime agent restarted, pid %d", sid, apid)

    async def resource_events(self, handle: PodHandle) -> dict[str, int]:
        counts = await asyncio.to_thread(Cgroup(f"{handle['session_id']}.app").limit_events)
        return counts | await asyncio.to_thread(self._disks.events, handle["session_id"],
                                                Path(handle["session_dir"]))

    async def exit_reason(self, handle: PodHandle) -> str:
        self._reap()
        parts = []
        for role, key in (("the app sandbox", "app"), ("the runtime agent", "agent")):
            pid = handle.get(f"{key}_pid")
            if _alive(pid, handle.get(f"{key}_start")):
                continue
            code = self._exit_codes.get(pid) if isinstance(pid, int) else None
            parts.append(f"{role} exited{_describe_status(code)}")
        return "; ".join(parts) or "the session's processes exited"

    # ------------------------------------------------------------------ stop
    async def stop_pod(self, handle: PodHandle) -> None:
        sid = handle["session_id"]
        await asyncio.to_thread(self._stop_processes, handle)
        if handle.get("egress"):
            e = handle["egress"]
            await self._egress.remove(Egress(e["netns"], e["host_if"], e["host_ip"],
                                             e["sandbox_ip"]))
        if handle.get("netns"):
            await delete_namespace(handle["netns"])
        await asyncio.to_thread(self._remove_runtime_dirs, Path(handle["session_dir"]),
                                Path(handle["runtime_dir"]))
        self._reap()
        logger.info("session %s: pod removed", sid)

    def _stop_processes(self, handle: PodHandle) -> None:
        sid = handle["session_id"]
        # The runtime agent first, gently, so it can close peers and finish the recording.
        if _alive(handle.get("agent_pid"), handle.get("agent_start")):
            _signal_group(handle["agent_pid"], signal.SIGTERM)
            deadline = time.monotonic() + 5
            agent_cg = Cgroup(f"{sid}.agent")
            # The outer bwrap dies at once on SIGTERM; the agent inside may still be
            # closing the recording, so wait for its cgroup to empty as well.
            while (_alive(handle.get("agent_pid"), handle.get("agent_start"))
                   or agent_cg.pids()):
                self._reap()
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        # Killing the namespace's init takes every app process with it.
        ns_pid = handle.get("app_ns_pid")
        if isinstance(ns_pid, int) and ns_pid > 0 and _alive(handle.get("app_pid"),
                                                             handle.get("app_start")):
            try:
                os.kill(ns_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in (f"{sid}.agent", f"{sid}.app"):
            Cgroup(name).remove()
        for key in ("agent_pid", "app_pid"):
            pid = handle.get(key)
            child = self._children.pop(pid, None) if isinstance(pid, int) else None
            if child is not None:
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    logger.warning("session %s: pid %d did not exit", sid, pid)

    @staticmethod
    def _remove_runtime_dirs(session_dir: Path, runtime_dir: Path) -> None:
        """Drop what only a live pod needs (its disk too); keep logs and the shared folder."""
        release_disk(session_dir)
        paths = session_paths(session_dir, runtime_dir)
        shutil.rmtree(runtime_dir, ignore_errors=True)
        shutil.rmtree(session_dir / "pod", ignore_errors=True)
        home = paths["home"]
        if home.is_dir():
            for child in home.iterdir():
                if child == paths["files"]:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    async def list_pods(self) -> list[str]:
        ids = {name.rsplit(".", 1)[0] for name in list_cgroups()}
        ids.update(ns[len("vr-"):] for ns in list_namespaces())
        return sorted(ids)

    async def stop_leftover(self, session_id: str, session_dir: Path, runtime_dir: Path) -> None:
        """Remove the resources of a pod whose handle was lost."""
        for name in (f"{session_id}.agent", f"{session_id}.app"):
            await asyncio.to_thread(Cgroup(name).remove)
        netns = "vr-" + session_id
        if netns in list_namespaces():
            from .network import run
            await run("ip", "netns", "delete", netns, check=False)
        await asyncio.to_thread(self._remove_runtime_dirs, session_dir, runtime_dir)

    def agent_socket(self, handle: PodHandle) -> Path:
        return session_paths(Path(handle["session_dir"]), Path(handle["runtime_dir"]))["run"] / "agent.sock"

    def files_dir(self, handle: PodHandle) -> Path:
        return session_paths(Path(handle["session_dir"]), Path(handle["runtime_dir"]))["files"]

    async def aclose(self) -> None:
        await self._egress.aclose()


def _compile_agent_code() -> None:
    """Write the bytecode of the runtime agent's code once, here (as the gateway's user).

    The agent runs as an unprivileged uid that cannot write ``__pycache__`` in the
    checkout, so without this every session start compiled ``agent_side`` and
    ``wire`` again (measured: a large part of the agent's ~0.6 s of imports)."""
    import compileall

    for package in ("agent_side", "wire"):
        compileall.compile_dir(PROJECT_ROOT / package, quiet=1, force=False)


def _describe_status(code: int | None) -> str:
    """`` (killed by SIGKILL)`` etc. for a Popen return code of the pod's outer process.

    That process is bubblewrap, which exits with 128 + n when its child was killed
    by signal n (and is itself -n when it was killed)."""
    if code is None:
        return ""
    sig = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else 0
    if sig:
        try:
            return f" (killed by {signal.Signals(sig).name})"
        except ValueError:
            return f" (killed by signal {sig})"
    return f" (status {code})"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _tail(path: Path, limit: int = 600) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return "(no log)"
    return data.decode(errors="replace").strip() or "(empty log)"
