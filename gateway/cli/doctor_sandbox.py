"""The doctor's probes of the local backend's machinery, run for real.

A bubblewrap sandbox like the app sandbox, a network namespace, a cgroup with
limits, and Xvfb in one sandbox captured over MIT-SHM from another joined to
its IPC namespace (exactly how a pod's runtime agent grabs the screen). Each
cleans up what it created, also when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.cli.checks import Check, DoctorOptions, run_tool

__all__ = ["check_cgroups", "check_netns", "check_sandbox", "check_user_namespaces",
           "check_xshm"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _base_fs() -> list[str]:
    from gateway.backends.sandbox import BASE_FS

    return list(BASE_FS)


_SANDBOX_PATH = ["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"]


def _drop(uid: int) -> list[str]:
    from gateway.backends.sandbox import drop_privileges

    return drop_privileges(uid)


def check_sandbox(options: DoctorOptions) -> Check:
    """bubblewrap with the app sandbox's namespaces and seccomp filter, dropping to a
    session uid."""
    from gateway.backends.seccomp import bpf_fd, local_program
    from gateway.errors import BackendError

    uid = options.uid_base - 2
    try:
        program = local_program()
    except BackendError as e:
        return Check("sandbox", True, False, f"the sandboxes' seccomp filter: {e}",
                     "run scripts/setup.sh (libseccomp2, and pyseccomp in the venv)")
    fd = bpf_fd(program)
    try:
        argv = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
                "--unshare-cgroup-try", "--die-with-parent", *_base_fs(), *_SANDBOX_PATH,
                "--seccomp", str(fd), "--",
                *_drop(uid), "/bin/sh", "-c", "id -u; grep '^Seccomp:' /proc/self/status"]
        code, out = run_tool(argv, timeout=15, pass_fds=(fd,))
    finally:
        os.close(fd)
    if code == 0 and [x.split() for x in out.strip().splitlines()[-2:]] == [
            [str(uid)], ["Seccomp:", "2"]]:
        return Check("sandbox", True, True,
                     "bubblewrap starts a sandbox with its own pid/ipc/uts/net namespaces "
                     f"and the seccomp filter ({len(program) // 8} BPF instructions) "
                     f"as uid {uid}")
    return Check("sandbox", True, False,
                 f"bubblewrap could not start the app sandbox (exit {code}): "
                 f"{out.strip()[:240]}",
                 "run as root on a kernel with namespaces and seccomp; in a container start "
                 "it with --privileged (or --cap-add SYS_ADMIN --security-opt "
                 "seccomp=unconfined --security-opt apparmor=unconfined)")


def check_user_namespaces() -> Check:
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = -1
    code, out = run_tool(["bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"], timeout=10)
    if code == 0:
        return Check("user namespaces", False, True,
                     f"available (user.max_user_namespaces={limit})")
    return Check("user namespaces", False, False,
                 f"bwrap --unshare-user failed (exit {code}): {out.strip()[:160]}; the "
                 "local backend runs as root and does not need them, rootless tools do",
                 "sysctl -w user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1")


def check_netns() -> Check:
    name = f"vrdoctor-{os.getpid()}"
    code, out = run_tool(["ip", "netns", "add", name], timeout=10)
    if code != 0:
        return Check("network namespaces", True, False,
                     f"`ip netns add` failed (exit {code}): {out.strip()[:200]} "
                     "(egress sessions get a namespace each)",
                     "run as root with CAP_NET_ADMIN; in a container: --privileged, or create "
                     "sessions with network \"none\"")
    run_tool(["ip", "netns", "delete", name], timeout=10)
    code, out = run_tool(["iptables", "-w", "-S", "INPUT"], timeout=10)
    if code != 0:
        return Check("network namespaces", True, False,
                     f"namespaces work but iptables does not (exit {code}): {out.strip()[:200]}",
                     "apt-get install iptables; modprobe ip_tables (or nf_tables)")
    return Check("network namespaces", True, True,
                 "ip netns add/delete and iptables work (egress sessions)")


def check_cgroups() -> Check:
    from gateway.backends.cgroup import CGROUP_ROOT, Cgroup, cgroup_version
    from gateway.backends.cgroup_layout import FIX, cgroup_layout, layout_problem

    layout = cgroup_layout(str(CGROUP_ROOT))
    problem = layout_problem(layout)
    if problem:
        return Check("cgroups", True, False, problem, FIX)
    version = cgroup_version()
    wanted = ("memory", "cpu", "pids")
    if version == 2:
        try:
            available = set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
        except OSError:
            available = set()
    else:
        try:
            available = {d.name for d in CGROUP_ROOT.iterdir()
                         if (d / "cgroup.procs").exists() and d.name not in ("systemd",
                                                                              "unified")}
        except OSError:
            available = set()
    missing = [c for c in wanted if c not in available]
    fix = ("boot with the memory, cpu and pids cgroup controllers (e.g. "
           "systemd.unified_cgroup_hierarchy=1 cgroup_enable=memory); in a container run it "
           "with --privileged --cgroupns=host")
    if missing:
        return Check("cgroups", True, False,
                     f"cgroup v{version}: controllers {', '.join(missing)} not available "
                     f"(found: {', '.join(sorted(available)) or 'none'})", fix)
    probe = Cgroup(f"doctor-{os.getpid()}.probe")
    try:
        probe.create(64 * 1024 * 1024, 0.5, 16)
    except OSError as e:
        return Check("cgroups", True, False,
                     f"cgroup v{version}: cannot create a limited cgroup under "
                     f"{CGROUP_ROOT}: {e}", fix)
    finally:
        probe.remove()
    hybrid = (f"; hybrid layout: the cgroup2 mount at {layout.v2_mount} holds none of them"
              if layout.mode == "hybrid" else "")
    return Check("cgroups", True, True,
                 f"cgroup v{version}: memory, cpu and pids limits usable (controllers: "
                 f"{', '.join(sorted(available))}){hybrid}")


_XSHM_PROBE = """
import sys
from agent_side.capture import ScreenCapture
cap = ScreenCapture(":0", 320, 240, use_damage=False)
cap.open()
print("backend=" + cap.backend)
cap.close()
"""


def check_xshm(options: DoctorOptions) -> Check:
    """Xvfb in an app-like sandbox, the capture code in an agent-like one joined to its
    IPC namespace, each as its own uid: does the capture use MIT-SHM?"""
    from gateway.backends.sandbox import agent_python_dirs, parent_dirs
    from gateway.backends.xauth import (
        POD_HOSTNAME,
        XAUTHORITY_IN_POD,
        secure_x11_dir,
        write_xauthority,
    )

    if shutil.which("Xvfb") is None or shutil.which("bwrap") is None:
        return Check("XShm in a pod", False, False, "needs Xvfb and bwrap (see above)",
                     skipped=True)
    uid_app, uid_agent = options.uid_base - 2, options.uid_base - 1
    tmp = Path(tempfile.mkdtemp(prefix="vr-doctor-"))
    x11 = tmp / "x11"
    x11.mkdir()
    tmp.chmod(0o755)
    # As a pod has them: the X socket folder and the cookie for the two uids only.
    secure_x11_dir(x11, uid_app, uid_agent)
    write_xauthority(tmp / "Xauthority", uid_app, uid_agent)
    xauth = ["--ro-bind", str(tmp / "Xauthority"), XAUTHORITY_IN_POD,
             "--setenv", "XAUTHORITY", XAUTHORITY_IN_POD, "--hostname", POD_HOSTNAME]
    read_fd, write_fd = os.pipe()
    app_argv = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
                "--die-with-parent", *_base_fs(),
                "--perms", "1777", "--tmpfs", "/dev/shm",
                "--bind", str(x11), "/tmp/.X11-unix", *xauth, *_SANDBOX_PATH,
                "--info-fd", str(write_fd), "--",
                *_drop(uid_app), "Xvfb", ":0", "-auth", XAUTHORITY_IN_POD, "-screen", "0",
                "320x240x24", "-nolisten",
                "tcp", "+extension", "MIT-SHM"]
    deadline = time.monotonic() + options.xshm_timeout_s
    app = subprocess.Popen(app_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                           start_new_session=True)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as reader:
            raw = reader.read()
        try:
            ns_pid = int(json.loads(raw)["child-pid"])
        except (ValueError, KeyError):
            return Check("XShm in a pod", False, False,
                         "the app sandbox did not start: " + _drain(app), "see `sandbox`")
        while not (x11 / "X0").exists():
            if app.poll() is not None:
                return Check("XShm in a pod", False, False,
                             "Xvfb exited in the sandbox: " + _drain(app),
                             "apt-get install --reinstall xvfb")
            if time.monotonic() > deadline:
                return Check("XShm in a pod", False, False,
                             "Xvfb did not create its socket in the sandbox in time", "")
            time.sleep(0.02)
        dirs = sorted(agent_python_dirs())
        probe = ["nsenter", f"--ipc=/proc/{ns_pid}/ns/ipc", "--",
                 "bwrap", "--unshare-pid", "--unshare-uts", "--die-with-parent",
                 *_base_fs(), *parent_dirs(*(str(d / "x") for d in dirs))]
        for d in dirs:
            probe += ["--ro-bind", str(d), str(d)]
        probe += ["--bind", str(x11), "/tmp/.X11-unix", *xauth,
                  "--setenv", "PYTHONPATH", str(_PROJECT_ROOT), "--setenv", "DISPLAY", ":0",
                  "--setenv", "HOME", "/tmp", *_SANDBOX_PATH, "--chdir", "/tmp", "--",
                  *_drop(uid_agent), sys.executable, "-c", _XSHM_PROBE]
        code, out = run_tool(probe, timeout=max(1.0, deadline - time.monotonic()))
    finally:
        _stop_sandbox(app)
        shutil.rmtree(tmp, ignore_errors=True)
    if "backend=xshm" in out:
        return Check("XShm in a pod", False, True,
                     "the runtime agent grabs the session's screen over MIT-SHM")
    if "backend=" in out:
        return Check("XShm in a pod", False, False,
                     "MIT-SHM does not work between the sandboxes; capture falls back to "
                     "XGetImage (works, but costs more CPU per frame)",
                     "check that /dev/shm is writable and IPC namespaces can be joined "
                     "(nsenter --ipc)")
    return Check("XShm in a pod", False, False,
                 f"the capture probe failed in the agent sandbox (exit {code}): "
                 f"{out.strip()[-300:]}", "see `code readable` and `sandbox`")


def _drain(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        return "(still running)"
    data = proc.stdout.read() if proc.stdout is not None else b""
    return data.decode(errors="replace").strip()[-240:] or "(no output)"


def _stop_sandbox(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
