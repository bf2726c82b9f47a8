"""The OCI runtime of the ``docker`` backend's app containers (``--docker-runtime``).

``runc`` (the default) runs the desktop in namespaces of the host kernel.
``runsc`` (gVisor) runs it on gVisor's user-space kernel: the desktop's
system calls reach the host only through the Sentry, so a sandbox escape
needs a gVisor bug *and* a host-kernel bug. Only the app container (Xvfb,
the desktop, Chromium) changes runtime; the runtime-agent container stays on
runc (see ``docs/docker.md`` *gVisor*: it needs the host network for ICE, and
the gateway reaches its unix socket through a bind mount).

What changes for a gVisor app container:

* **No shared IPC namespace.** gVisor keeps SysV shared memory inside its
  own kernel, so joining the sandbox's IPC namespace would share nothing; the
  agent keeps a private one. XShm still works: mss passes a memfd through the
  X socket, which crosses as a host file (``agent_side/capture.py`` probes
  that the server's writes arrive, and falls back to XGetImage if not).
* **A larger host pids limit** (:meth:`RuntimeInfo.host_pids_limit`).
* **The registration needs** ``--host-uds=create`` (or ``all``) among the
  runtime's arguments: without it Xvfb's socket made inside gVisor on the
  shared ``/tmp/.X11-unix`` bind mount never appears for the agent.
  :func:`check_runtime` refuses a registration without it.

:func:`registered_runtime` runs when the backend starts (an unknown runtime
is a clear error then, not a failed session later), :func:`check_runtime` also
in ``doctor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BackendError

__all__ = ["DEFAULT_RUNTIME", "GVISOR_PIDS_FACTOR", "RuntimeInfo", "check_runtime",
           "describe_registration", "registered_runtime"]

DEFAULT_RUNTIME = "runc"
DOCS = "docs/docker.md#gvisor-runsc"
GVISOR_PIDS_FACTOR = 8
_HOST_UDS_OK = ("--host-uds=create", "--host-uds=all", "-host-uds=create", "-host-uds=all",
                "--fsgofer-host-uds", "-fsgofer-host-uds")


@dataclass(frozen=True)
class RuntimeInfo:
    """A runtime as dockerd has it registered."""

    name: str
    """The name containers ask for (``HostConfig.Runtime``)."""
    path: str
    """The binary dockerd runs."""
    args: tuple[str, ...] = ()
    """``runtimeArgs`` of the registration."""

    @property
    def gvisor(self) -> bool:
        return self.path.rsplit("/", 1)[-1] == "runsc"

    def app_options(self) -> dict[str, Any]:
        """Extra ``containers.run`` arguments of the app container."""
        return {} if self.name == DEFAULT_RUNTIME else {"runtime": self.name}

    def host_pids_limit(self, limit: int) -> int:
        """The app container's cgroup pids limit for a sandbox of *limit* tasks.

        On gVisor's ptrace platform the host cgroup counts the Sentry's and the
        stubs' host threads, not the desktop's: an idle Chromium desktop is
        about 1,240 of them, and at the limit the Sentry panics (the whole
        sandbox exits with status 2) instead of failing one ``clone``. So the
        host limit is scaled by :data:`GVISOR_PIDS_FACTOR`; it still bounds a
        fork bomb, which then ends its own session.
        """
        return limit * GVISOR_PIDS_FACTOR if self.gvisor else limit

    def agent_ipc_mode(self, app_id: str) -> str:
        """The runtime agent joins the app's IPC namespace for XShm, unless gVisor holds it."""
        return "private" if self.gvisor else f"container:{app_id}"


def _registered(engine_info: dict[str, Any]) -> dict[str, RuntimeInfo]:
    out = {}
    for name, entry in (engine_info.get("Runtimes") or {}).items():
        entry = entry or {}
        out[name] = RuntimeInfo(name, str(entry.get("path") or name),
                                tuple(str(a) for a in entry.get("runtimeArgs") or ()))
    return out


def check_runtime(engine_info: dict[str, Any], name: str) -> RuntimeInfo:
    """The registration of *name* from ``docker info``; BackendError if unusable."""
    runtimes = _registered(engine_info)
    info = runtimes.get(name)
    if info is None:
        known = ", ".join(sorted(runtimes)) or "none"
        raise BackendError(
            f"docker runtime {name!r} is not registered with dockerd (registered: {known}); "
            f"register it in /etc/docker/daemon.json and send dockerd SIGHUP "
            f"(scripts/docker-setup.sh does it for runsc; {DOCS})")
    if info.gvisor and not any(a in _HOST_UDS_OK for a in info.args):
        raise BackendError(
            f"docker runtime {name!r} (gVisor) is registered without --host-uds=create: the "
            f"X server's socket would not reach the runtime agent (runtimeArgs: "
            f"{list(info.args)}; {DOCS})")
    return info


def registered_runtime(client: Any, name: str) -> RuntimeInfo:
    """:func:`check_runtime` against the engine behind *client* (a docker SDK client).

    The default runtime is not looked up: every dockerd has ``runc``, and
    ``GET /info`` is then not needed (the narrow socket of the compose
    deployment, ``docker_proxy.py``, allows it, older ones did not).
    """
    if name == DEFAULT_RUNTIME:
        return RuntimeInfo(DEFAULT_RUNTIME, DEFAULT_RUNTIME)
    try:
        engine_info = client.info()
    except Exception as e:  # docker.errors.DockerException; not imported in this layer
        raise BackendError(f"cannot read dockerd's runtimes for {name!r}: {e}") from e
    return check_runtime(engine_info, name)


def describe_registration(info: RuntimeInfo) -> str:
    """One line for logs and ``doctor``."""
    args = " ".join(info.args)
    kind = "gVisor" if info.gvisor else "OCI runtime"
    return f"{info.name}: {kind} {info.path}{' ' + args if args else ''}"
