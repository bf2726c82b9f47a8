"""Run code INSIDE a live session's app sandbox, as its user, for the security tests.

``local`` backend: the probe enters every namespace of the sandbox's init
(mount, pid, ipc, uts, net, cgroup), joins the sandbox's cgroup, installs the
sandbox's seccomp program (as bwrap does for the launcher) and drops to the session uid exactly as
the pod's own launcher does (``setpriv``: no capabilities, empty bounding set,
no-new-privs) — so it sees the filesystem,
processes and network that Chromium sees, and it counts against the same
limits. :func:`tests.security.test_sandbox.test_probe_runs_like_the_apps`
checks that against the live xterm.

``docker`` backend: ``docker exec`` as the app user in the app container
(same capabilities, seccomp profile, namespaces and cgroup as its apps).

Probes are Python programs (``python3`` is in both sandboxes) that print one
JSON object, so every attempt reports its errno name, e.g. ``"EACCES"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from gateway.appkeys import MANAGER
from gateway.backends.cgroup import Cgroup
from gateway.backends.seccomp import bpf_fd, local_program
from gateway.backends.xauth import XAUTHORITY_IN_POD
from tests.gateway_fixtures import Gateway

PROBE_PRELUDE = r'''
import base64, errno, json, os, socket, sys

def attempt(fn):
    """"ok" (or the value fn returns) on success, else the errno name."""
    try:
        value = fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    except Exception as e:
        return type(e).__name__
    return "ok" if value is None else value

def read(path):
    def fn():
        with open(path, "rb") as f:
            f.read(1)
    return attempt(fn)

def listdir(path):
    return attempt(lambda: sorted(os.listdir(path)) and None)

def tcp(host, port, timeout=3.0):
    def fn():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
    r = attempt(fn)
    return "TIMEOUT" if r == "TimeoutError" else r

def unix(path):
    def fn():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(path)
    return attempt(fn)

ARGS = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
'''


_SECCOMP_LOADER = r'''
import ctypes, os, sys
fd, prog = int(sys.argv[1]), b""
while chunk := os.read(fd, 65536):
    prog += chunk
os.close(fd)
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
fprog = SockFprog(len(prog) // 8, prog)
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
    raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")
os.execvp(sys.argv[2], sys.argv[2:])
'''
"""Installs the BPF program read from descriptor argv[1], then runs argv[2:]."""


@dataclass
class ProbeResult:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        assert self.code == 0, f"probe failed ({self.code}): {self.err[-2000:]}"
        lines = [line for line in self.out.splitlines() if line.startswith("{")]
        assert lines, f"probe printed no JSON: {self.out[-500:]} {self.err[-2000:]}"
        return dict(json.loads(lines[-1]))


def app_user(gw: Gateway, sid: str) -> int:
    pod = gw.extra["app"][MANAGER].get(sid).pod
    return int(pod["uid_app"])


def _local_argv(gw: Gateway, sid: str, argv: list[str], seccomp_fd: int) -> list[str]:
    pod = gw.extra["app"][MANAGER].get(sid).pod
    ns_pid, uid = int(pod["app_ns_pid"]), int(pod["uid_app"])
    procs = ":".join(str(p) for p in Cgroup(f"{sid}.app").procs_files)
    join_cgroup = ('IFS=:; for f in $1; do echo $$ > "$f" || exit 125; done; '
                   'shift; unset IFS; exec "$@"')
    return ["/bin/sh", "-c", join_cgroup, "vr-probe", procs,
            "nsenter", f"--target={ns_pid}", "--mount", "--pid", "--ipc", "--uts", "--net",
            "--cgroup", "--root", "--wdns=/home/user", "--",
            # the sandbox's own seccomp program, installed as bwrap installs it
            "python3", "-c", _SECCOMP_LOADER, str(seccomp_fd),
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "--",
            "/usr/bin/env", "-i", "HOME=/home/user", "USER=user", "LANG=C.UTF-8",
            "PATH=/usr/local/bin:/usr/bin:/bin", "DISPLAY=:0",
            f"XAUTHORITY={XAUTHORITY_IN_POD}", *argv]


async def run_in_app(gw: Gateway, sid: str, argv: list[str], timeout: float = 60) -> ProbeResult:
    """Run *argv* in session *sid*'s app sandbox as its user; (exit code, stdout, stderr).

    A process killed by a signal reports ``-signal`` (local) or ``128 + signal`` (docker).
    """
    if gw.extra.get("backend", "local") == "docker":
        return await asyncio.to_thread(_docker_exec, gw, sid, argv, timeout)
    bpf = bpf_fd(local_program())
    try:
        proc = await asyncio.create_subprocess_exec(
            *_local_argv(gw, sid, argv, bpf), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(bpf,))
    finally:
        os.close(bpf)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{argv[:3]} did not finish in {timeout} s in session {sid}") from None
    assert proc.returncode is not None
    return ProbeResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _docker_exec(gw: Gateway, sid: str, argv: list[str], timeout: float) -> ProbeResult:
    import docker

    pod = gw.extra["app"][MANAGER].get(sid).pod
    client = docker.from_env(timeout=int(timeout) + 10)
    try:
        container = client.containers.get(pod["app"])
        exec_id = client.api.exec_create(container.id, ["timeout", "-s", "KILL", str(int(timeout)),
                                                        *argv],
                                         user=container.attrs["Config"]["User"],
                                         workdir="/home/user",
                                         environment={"HOME": "/home/user", "DISPLAY": ":0",
                                                      "XAUTHORITY": XAUTHORITY_IN_POD})
        out, err = client.api.exec_start(exec_id, demux=True)
        code = client.api.exec_inspect(exec_id)["ExitCode"]
    finally:
        client.close()
    return ProbeResult(int(code), (out or b"").decode(errors="replace"),
                       (err or b"").decode(errors="replace"))


async def probe(gw: Gateway, sid: str, body: str, args: dict[str, Any] | None = None,
                timeout: float = 60) -> dict[str, Any]:
    """Run the Python *body* (after :data:`PROBE_PRELUDE`) in the sandbox; its last
    printed JSON object."""
    code = PROBE_PRELUDE + body
    result = await run_in_app(gw, sid, ["python3", "-c", code, json.dumps(args or {})], timeout)
    return result.json()
