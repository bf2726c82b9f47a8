"""The local backend's two bubblewrap sandboxes: what each sees and runs.

* :func:`app_argv`: the app sandbox (own pid, ipc, uts, mount and, without egress,
  net namespaces; read-only /usr and /etc; private /tmp, /dev/shm and HOME; the pod's
  app uid with no capabilities and no-new-privs; the seccomp filter). It runs
  :func:`launcher`: Xvfb, then fluxbox, xterm and Chromium.
* :func:`agent_argv`: the runtime agent, in the host network namespace, joined to the
  app sandbox's IPC namespace for XShm, seeing only the X socket folder, its run
  folder, the DevTools folder, the recording folder and the Python it needs.

The docker and swarm pods reuse the Chromium flags and the folder names.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

from ..config import GatewayConfig
from ..errors import BackendError
from .base import PodHandle, PodRequest, session_paths, viewer_limit_args
from .devtools import POD_DIR, POD_SOCKET, RELAY_IN_POD, host_cdp_dir, relay_command, relay_script
from .network import Egress
from .seccomp import SECCOMP_FD
from .xauth import POD_HOSTNAME, XAUTHORITY_IN_POD

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]
"""The checkout: the runtime agent runs from it (``python -m agent_side``) in its sandbox."""

X_DISPLAY = ":0"
SANDBOX_HOME = "/home/user"
AGENT_RUN = "/run/vr"
AGENT_RECORDING = "/run/vr-recording"
BASE_FS = [
    "--ro-bind", "/usr", "/usr",
    "--ro-bind", "/etc", "/etc",
    "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/sbin", "/sbin",
    "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
    "--proc", "/proc",
    "--dev", "/dev",
    "--perms", "1777", "--tmpfs", "/tmp",
    "--perms", "0755", "--dir", "/home",
    "--perms", "0755", "--dir", "/run",
]


def agent_python_dirs() -> set[Path]:
    """Folders the runtime agent's sandbox needs read-only: Python, the venv, the code."""
    wanted = {Path(sys.prefix), Path(sys.base_prefix), PROJECT_ROOT,
              Path(sys.executable).resolve().parent.parent}
    # Bound where they really are; a path through a symlink (a checkout's .venv
    # linking elsewhere) also as itself, unless it lies inside another bound folder:
    # there the symlink itself shows, and bubblewrap cannot bind onto it.
    dirs = {d.resolve() for d in wanted}
    around = wanted | dirs
    dirs |= {d for d in wanted if d != d.resolve() and not any(p in around for p in d.parents)}
    return dirs


def check_agent_can_read(dirs: set[Path]) -> None:
    """The runtime agent runs as an unprivileged uid: each bound folder must be
    readable and searchable by "others" (its parents need not be: bubblewrap
    recreates them). Fail at start-up with the fix rather than per session."""
    for d in sorted(dirs):
        mode = d.stat().st_mode
        if mode & 0o005 != 0o005:
            raise BackendError(
                f"the runtime agent (an unprivileged user) cannot read {d} (mode {mode & 0o777:o}); "
                f"run: chmod o+rx {d}")


def parent_dirs(*targets: str) -> list[str]:
    """``--dir`` for every ancestor of *targets* (bwrap would make them 0700)."""
    seen: list[str] = []
    for target in targets:
        for parent in reversed(Path(target).parents):
            p = str(parent)
            if p not in ("/", *seen) and p not in ("/usr", "/etc", "/tmp", "/home", "/run", "/proc",
                                                  "/dev"):
                seen.append(p)
    argv: list[str] = []
    for p in seen:
        argv += ["--perms", "0755", "--dir", p]
    return argv


def drop_privileges(uid: int) -> list[str]:
    return [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
    ]


def launcher(spec_width: int, spec_height: int, apps: tuple[str, ...], start_url: str | None,
              chromium_flags: list[str], uid_agent: int) -> str:
    """Shell script run as the session user inside the app sandbox (PID 2)."""
    lines = [
        "#!/bin/sh",
        "# Visual Runtime app sandbox: X first, then the desktop apps.",
        "set -u",
        f"Xvfb {X_DISPLAY} -auth {XAUTHORITY_IN_POD} -screen 0 {spec_width}x{spec_height}x24 "
        "-nolisten tcp -noreset "
        "-dpi 96 +extension DAMAGE +extension MIT-SHM +extension XTEST &",
        "XVFB=$!",
        "i=0",
        f"while [ ! -S /tmp/.X11-unix/X{X_DISPLAY[1:]} ]; do",
        "  i=$((i+1)); [ $i -gt 500 ] && { echo 'Xvfb did not start' >&2; exit 1; }",
        "  kill -0 $XVFB 2>/dev/null || { echo 'Xvfb exited' >&2; exit 1; }",
        "  sleep 0.02",
        "done",
        f"export DISPLAY={X_DISPLAY}",
    ]
    if "fluxbox" in apps:
        lines.append("fluxbox -rc \"$HOME/.fluxbox/init\" &")
    if "xterm" in apps:
        lines.append("xterm -geometry 100x30+40+40 -fa 'DejaVu Sans Mono' -fs 11 &")
    if "chromium" in apps:
        url = start_url or "about:blank"
        quoted = "'" + url.replace("'", "'\\''") + "'"
        flags = " ".join(chromium_flags)
        # DevTools on a pipe only, relayed to the agent's socket (devtools.py)
        lines.append(f"{relay_command(uid_agent)} {flags} {quoted} >\"$HOME/.chromium.log\" 2>&1 &")
    lines += ["wait $XVFB", "CODE=$?", "echo \"Xvfb exited with $CODE\" >&2", "exit $CODE", ""]
    return "\n".join(lines)


def chromium_flags(width: int, height: int) -> list[str]:
    return [
        "--no-first-run", "--no-default-browser-check", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-features=Translate,MediaRouter", "--password-store=basic",
        f"--user-data-dir={SANDBOX_HOME}/.config/chromium",
        "--window-position=0,0", f"--window-size={width},{height}",
        f"--download-default-directory={SANDBOX_HOME}/Downloads",
    ]


FLUXBOX_INIT = """session.screen0.toolbar.visible: false
session.screen0.rootCommand:
session.styleOverlay: ~/.fluxbox/overlay
session.screen0.workspaces: 1
"""


def app_argv(request: PodRequest, handle: PodHandle, egress: Egress | None) -> list[str]:
    """The app sandbox: ``bwrap`` (in the egress namespace, if any) running the launcher."""
    paths = session_paths(request.session_dir, request.runtime_dir)
    pod = request.session_dir / "pod"
    argv: list[str] = []
    netns = egress.netns if egress is not None else handle.get("netns")
    if netns:
        argv += ["ip", "netns", "exec", netns]
    argv += ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not netns:
        argv.append("--unshare-net")
    argv += BASE_FS
    argv += [
        "--ro-bind", str(pod / "passwd"), "/etc/passwd",
        "--ro-bind", str(pod / "group"), "/etc/group",
        "--ro-bind", str(pod / "resolv.conf"), "/etc/resolv.conf",
        "--perms", "1777", "--size", str(256 * 1024 * 1024), "--tmpfs", "/dev/shm",
        "--bind", str(paths["x11"]), "/tmp/.X11-unix",
        *parent_dirs(XAUTHORITY_IN_POD),
        "--ro-bind", str(paths["xauth"]), XAUTHORITY_IN_POD,
        "--setenv", "XAUTHORITY", XAUTHORITY_IN_POD,
        "--bind", str(paths["home"]), SANDBOX_HOME,
        *parent_dirs("/opt/visual-runtime/launch.sh"),
        "--ro-bind", str(pod / "launch.sh"), "/opt/visual-runtime/launch.sh",
        "--ro-bind", str(relay_script()), RELAY_IN_POD,
        *parent_dirs(POD_SOCKET),
        "--bind", str(host_cdp_dir(request.runtime_dir)), POD_DIR,
        "--hostname", "visual-runtime",
        "--setenv", "HOME", SANDBOX_HOME,
        "--setenv", "USER", "user",
        "--setenv", "SHELL", "/bin/bash",
        "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
        "--setenv", "LANG", "C.UTF-8",
        "--chdir", SANDBOX_HOME,
        "--info-fd", "{info_fd}",
        "--seccomp", SECCOMP_FD,
        "--",
    ]
    argv += drop_privileges(handle["uid_app"])
    argv += ["/opt/visual-runtime/launch.sh"]
    return argv

def agent_argv(config: GatewayConfig, request: PodRequest, handle: PodHandle,
               ns_pid: int) -> list[str]:
    """The runtime agent's sandbox, joined to the IPC namespace of the app sandbox's
    init (*ns_pid*) for XShm."""
    paths = session_paths(request.session_dir, request.runtime_dir)
    w, h = request.spec.resolution
    python_dirs = agent_python_dirs()
    project_root = PROJECT_ROOT
    argv = ["nsenter", f"--ipc=/proc/{ns_pid}/ns/ipc", "--",
            "bwrap", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    argv += BASE_FS
    argv += parent_dirs(*(str(d / "x") for d in sorted(python_dirs)))
    for d in sorted(python_dirs):
        argv += ["--ro-bind", str(d), str(d)]
    argv += [
        "--bind", str(paths["x11"]), "/tmp/.X11-unix",
        *parent_dirs(XAUTHORITY_IN_POD),
        "--ro-bind", str(paths["xauth"]), XAUTHORITY_IN_POD,
        "--setenv", "XAUTHORITY", XAUTHORITY_IN_POD,
        "--hostname", POD_HOSTNAME,  # python-xlib finds the cookie by host name
        "--bind", str(paths["run"]), AGENT_RUN,
        *parent_dirs(POD_SOCKET),
        "--bind", str(host_cdp_dir(request.runtime_dir)), POD_DIR,
        *(["--bind", str(request.session_dir / "recording"), AGENT_RECORDING]
          if request.spec.enable_recording else []),
        "--setenv", "PYTHONPATH", str(project_root),
        "--setenv", "HOME", "/tmp",
        "--setenv", "DISPLAY", X_DISPLAY,
        "--setenv", "PYTHONUNBUFFERED", "1",
        "--chdir", "/tmp",
        "--seccomp", SECCOMP_FD,
        "--",
    ]
    argv += drop_privileges(handle["uid_agent"])
    argv += [
        sys.executable, "-m", "agent_side",
        "--socket", f"{AGENT_RUN}/agent.sock",
        "--display", X_DISPLAY,
        "--resolution", f"{w}x{h}",
        "--x11vnc-own-netns",  # the agent shares the host's network namespace
        f"--session-id={request.session_id}",  # ids may start with "-"
    ]
    if request.pooled:
        argv.append("--pooled")
    if "chromium" in config.apps:
        argv += ["--cdp-socket", POD_SOCKET]
    if config.ice_port_min and config.ice_port_max:
        argv += ["--ice-ports", f"{config.ice_port_min}-{config.ice_port_max}"]
    if request.spec.enable_recording:
        argv += ["--recording", AGENT_RECORDING,
                 "--recording-min-free-mb", str(config.recording_min_free_mb)]
    argv += viewer_limit_args(config)
    return argv
