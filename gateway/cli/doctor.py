"""``visual-runtime doctor``: is this machine ready to run sessions?

Each check really exercises the thing it names (runs the program, starts a
sandbox, creates a cgroup, binds the port) and reports OK, or what is wrong
and the exact command that fixes it. Checks marked *required* decide the
exit status; the others are warnings (a degraded but working product).

Everything here blocks (subprocesses, the docker SDK); the CLI calls
:func:`run_checks` directly, outside any event loop.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.backends.session_disk import check_support, create_disk, release_disk
from gateway.backends.uidrange import OWNER, check_range, free_base, pod_range
from gateway.cli.checks import Check, DoctorOptions, run_tool
from gateway.cli.doctor_sandbox import (
    check_cgroups,
    check_netns,
    check_sandbox,
    check_user_namespaces,
    check_xshm,
)
from gateway.cli.doctor_swarm import check_swarm
from gateway.config import GatewayConfig
from gateway.errors import BackendError

__all__ = ["Check", "DoctorOptions", "format_check", "format_report", "run_checks", "to_json"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class _Program:
    name: str
    version_argv: tuple[str, ...]
    package: str
    purpose: str
    backends: frozenset[str] = frozenset({"local"})
    required: bool = True
    pattern: str = r"\d+\.\d+"
    app: str | None = None
    """Only needed when this desktop app is in ``--apps``."""


_PROGRAMS: tuple[_Program, ...] = (
    _Program("Xvfb", ("-help",), "xvfb", "the X server of each session", pattern=r"use: X"),
    _Program("fluxbox", ("-version",), "fluxbox", "window manager", app="fluxbox"),
    _Program("xterm", ("-version",), "xterm", "terminal in each session", pattern=r"XTerm",
             app="xterm"),
    _Program("chromium", ("--version",), "chromium", "the browser in each session",
             pattern=r"Chromium \d", app="chromium"),
    _Program("x11vnc", ("-version",), "x11vnc", "the noVNC fallback viewer", required=False),
    _Program("ffmpeg", ("-version",), "ffmpeg", "finalising recordings",
             backends=frozenset({"local", "docker", "swarm"})),
    _Program("ffprobe", ("-version",), "ffmpeg", "checking recordings",
             backends=frozenset({"local", "docker", "swarm"})),
    _Program("bwrap", ("--version",), "bubblewrap", "the session sandboxes"),
    _Program("setpriv", ("--version",), "util-linux", "dropping to the session users"),
    _Program("nsenter", ("--version",), "util-linux", "joining the runtime agent to its pod"),
    _Program("ip", ("-V",), "iproute2", "per-session network namespaces"),
    _Program("iptables", ("--version",), "iptables", "egress rules of sessions"),
)


# ---------------------------------------------------------------- helpers

def _first_line(text: str, pattern: str) -> str | None:
    for line in text.splitlines():
        if re.search(pattern, line):
            return line.strip()[:90]
    return None


def _existing_parent(path: Path) -> Path:
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


# ----------------------------------------------------------------- checks
def check_program(program: _Program) -> Check:
    path = shutil.which(program.name)
    if path is None:
        return Check(program.name, program.required, False,
                     f"{program.name} ({program.purpose}) is not on PATH",
                     f"apt-get install {program.package}")
    code, out = run_tool([path, *program.version_argv])
    line = _first_line(out, program.pattern)
    if line is None:
        return Check(program.name, program.required, False,
                     f"{path} does not run (exit {code}): {out.strip()[:160] or 'no output'}",
                     f"apt-get install --reinstall {program.package}")
    if program.name == "Xvfb":
        _, version = run_tool(["dpkg-query", "-W", "-f", "${Version}", "xvfb"], timeout=5)
        line = f"Xvfb {version.strip()}" if re.match(r"^\S+$", version.strip()) else "Xvfb"
    return Check(program.name, program.required, True, f"{line} ({path})")


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", True, True, "running as root (cgroups, namespaces, session users)")
    return Check("root", True, False,
                 f"running as uid {os.geteuid()}: the local backend needs root to create "
                 "cgroups, network namespaces and the per-session users",
                 "run `visual-runtime serve` as root (sudo), or use --backend docker")


def check_agent_code() -> Check:
    from gateway.backends.sandbox import agent_python_dirs

    bad = []
    for d in sorted(agent_python_dirs()):
        mode = d.stat().st_mode
        if mode & 0o005 != 0o005:
            bad.append((d, mode & 0o777))
    if not bad:
        return Check("code readable", True, True,
                     "the runtime agent's user can read Python, the venv and the code")
    dirs = " ".join(str(d) for d, _ in bad)
    return Check("code readable", True, False,
                 "the runtime agent (an unprivileged user) cannot read "
                 + ", ".join(f"{d} (mode {m:o})" for d, m in bad),
                 f"chmod o+rx {dirs}")


def check_state_dir(options: DoctorOptions) -> Check:
    state = options.state_dir.resolve()
    base = _existing_parent(state)
    if not os.access(base, os.W_OK | os.X_OK):
        return Check("state dir", True, False,
                     f"{base} is not writable (state dir {state})",
                     f"chown $(id -u) {base}, or pass --state-dir to a writable folder")
    where = "exists" if state.exists() else f"will be created under {base}"
    return Check("state dir", True, True, f"{state} ({where}, writable)")


def check_uid_range(options: DoctorOptions) -> Check:
    """The pods' uids are reserved in /etc/subuid and /etc/subgid, overlapping no one's."""
    start, count = pod_range(options.uid_base)
    problems = check_range(options.uid_base)
    if not problems:
        return Check("pod uid range", True, True,
                     f"uids {start}-{start + count - 1} reserved for the pods ({OWNER})")
    overlap = any("overlap" in p for p in problems)
    return Check("pod uid range", overlap, False, "; ".join(problems),
                 f"set uid_base to {free_base()}" if overlap else
                 "the gateway reserves it on its first start, or add "
                 f"'{OWNER}:{start}:{count}' to /etc/subuid and /etc/subgid")


def check_runtime_dir(options: DoctorOptions) -> Check:
    runtime = options.runtime_dir.resolve()
    # <runtime>/<22-char session id>/run/agent.sock must fit sun_path (107 bytes).
    longest = len(str(runtime)) + 1 + 22 + len("/run/agent.sock")
    if longest > 107:
        return Check("runtime dir", True, False,
                     f"{runtime} is too long for unix socket paths ({longest} > 107 bytes)",
                     "pass a shorter --runtime-dir, e.g. /run/visual-runtime")
    base = _existing_parent(runtime)
    if not os.access(base, os.W_OK | os.X_OK):
        return Check("runtime dir", True, False, f"{base} is not writable",
                     f"pass --runtime-dir to a writable folder, or chown $(id -u) {base}")
    return Check("runtime dir", True, True, f"{runtime} (socket paths fit, writable)")


def check_disk(options: DoctorOptions) -> Check:
    base = _existing_parent(options.state_dir)
    usage = shutil.disk_usage(base)
    free_mb = usage.free // (1024 * 1024)
    need = options.recording_min_free_mb
    if free_mb < need:
        return Check("free disk", True, False,
                     f"{free_mb} MiB free on {base}; sessions stop recording below "
                     f"--recording-min-free-mb {need}",
                     "free space (`visual-runtime sessions delete ID` of old sessions, a "
                     "lower --recording-quota-mb), or move --state-dir to a bigger disk")
    detail = f"{free_mb / 1024:.1f} GiB free on {base} (recording stops below {need} MiB)"
    quota = options.recording_quota_mb
    if quota and free_mb < quota:
        return Check("free disk", False, False,
                     detail + f"; less than --recording-quota-mb {quota}: recordings will "
                     "stop for low disk before retention deletes old ones",
                     f"lower --recording-quota-mb below {free_mb}, or free space")
    return Check("free disk", True, True, detail)


def _probe_gateway(host: str, port: int) -> str | None:
    """The title of the OpenAPI document when a Visual Runtime gateway answers there.

    Only identifies the program (no token is sent), so a gateway's self-signed
    certificate is not verified.
    """
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in target and not target.startswith("["):
        target = f"[{target}]"
    for scheme in ("http", "https"):
        context = ssl._create_unverified_context() if scheme == "https" else None
        try:
            base = f"{scheme}://{target}:{port}"
            with urllib.request.urlopen(base + "/healthz", timeout=2,  # noqa: S310
                                        context=context) as resp:
                if json.loads(resp.read()).get("status") != "ok":
                    return None
            with urllib.request.urlopen(base + "/api/openapi.json", timeout=2,  # noqa: S310
                                        context=context) as resp:
                return str(json.loads(resp.read()).get("info", {}).get("title", ""))
        except (urllib.error.URLError, OSError, ValueError) as e:
            if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None),
                                                         TimeoutError):
                return None  # something that holds the port but does not speak HTTP
            continue
    return None


def check_port(options: DoctorOptions) -> Check:
    host, port = options.host, options.port
    if port == 0:
        return Check("port", True, True, "port 0: a free port is picked at start")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return Check("port", True, True, f"{host}:{port} is free")
        except OSError as e:
            error = e
    if error.errno == errno.EADDRINUSE:
        title = _probe_gateway(host, port)
        if title == "Visual Runtime":
            return Check("port", True, True,
                         f"{host}:{port} is in use by a running Visual Runtime gateway "
                         "(the session commands can use it; a second `serve` needs another "
                         "--port)")
        return Check("port", True, False,
                     f"{host}:{port} is in use by another program",
                     f"find it with `ss -ltnp 'sport = :{port}'`; stop it or pass --port")
    return Check("port", True, False, f"cannot bind {host}:{port}: {error.strerror}",
                 "pass a --host this machine has (127.0.0.1, 0.0.0.0) and a --port >= 1024 "
                 "unless running as root")


def check_docker(options: DoctorOptions) -> list[Check]:
    try:
        import docker
        import docker.errors
    except ImportError:
        return [Check("docker engine", True, False, "the docker Python SDK is not installed",
                      "pip install docker (in the gateway's venv)")]
    try:
        client = docker.from_env(timeout=15)
        client.ping()
        version = client.version().get("Version", "?")
    except docker.errors.DockerException as e:
        return [Check("docker engine", True, False, f"the docker engine does not answer: {e}",
                      "start it: systemctl start docker (or scripts/docker-setup.sh)")]
    checks = [Check("docker engine", True, True, f"dockerd {version} answers")]
    checks.append(_check_docker_runtime(client, options))
    try:
        image = client.images.get(options.docker_image)
    except docker.errors.ImageNotFound:
        checks.append(Check("session image", True, False,
                            f"{options.docker_image} is not built",
                            "scripts/docker-setup.sh (or container/build.sh session)"))
        client.close()
        return checks
    except docker.errors.DockerException as e:
        checks.append(Check("session image", True, False, f"cannot inspect the image: {e}",
                            "scripts/docker-setup.sh"))
        client.close()
        return checks
    client.close()
    size = (image.attrs.get("Size") or 0) / 1e6
    labels = image.labels or {}
    have = labels.get("org.visual-runtime.content-hash", "")
    checks.append(Check("session image", True, True,
                        f"{options.docker_image} ({image.short_id}, {size:.0f} MB)"))
    build = _PROJECT_ROOT / "container" / "build.sh"
    if have and build.exists():
        code, out = run_tool(["bash", str(build), "hash"], timeout=30)
        want = out.strip().splitlines()[-1:] or [""]
        if code == 0 and want[0] != have:
            checks.append(Check("session image age", False, False,
                                f"{options.docker_image} was built from other sources "
                                f"(hash {have}, the checkout is {want[0]})",
                                "container/build.sh session"))
        elif code == 0:
            checks.append(Check("session image age", False, True,
                                "built from this checkout's sources"))
    return checks


def _check_docker_runtime(client: object, options: DoctorOptions) -> Check:
    """``--docker-runtime`` is registered with dockerd (and gVisor with --host-uds)."""
    from gateway.backends.docker_runtime import check_runtime, describe_registration
    name = (options.config or GatewayConfig()).docker_runtime
    try:
        info = check_runtime(client.info(), name)  # type: ignore[attr-defined]
    except BackendError as e:
        return Check("docker runtime", True, False, str(e),
                     "scripts/docker-setup.sh registers runsc (docs/docker.md#gvisor-runsc)")
    except Exception as e:  # the engine went away between the checks
        return Check("docker runtime", True, False, f"cannot read dockerd's runtimes: {e}",
                     "scripts/docker-setup.sh")
    return Check("docker runtime", True, True, describe_registration(info))


# ------------------------------------------------------------------ runner
def run_checks(options: DoctorOptions,
               on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check for *options*, in a stable order (programs are checked in parallel)."""
    programs = [p for p in _PROGRAMS
                if options.backend in p.backends and (p.app is None or p.app in options.apps)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(check_program, programs))
    checks: list[Check] = []

    def add(items: Iterable[Check]) -> None:
        for item in items:
            checks.append(item)
            if on_check is not None:
                on_check(item)

    add(found)
    have = {c.name for c in found if c.ok}
    if options.backend == "local":

        add([check_root(), check_agent_code()])
        if "bwrap" in have and "setpriv" in have:
            add([check_sandbox(options), check_user_namespaces()])
        else:
            add([Check("sandbox", True, False, "needs bwrap and setpriv (see above)",
                       skipped=True)])
        if "ip" in have and "iptables" in have:
            add([check_netns()])
        add([check_cgroups()])
        if {"Xvfb", "bwrap", "setpriv", "nsenter"} <= have:
            add([check_xshm(options)])
        else:
            add([Check("XShm in a pod", False, False,
                       "needs Xvfb, bwrap, setpriv and nsenter (see above)", skipped=True)])
        add([check_runtime_dir(options), check_uid_range(options)])
    else:
        add(check_docker(options))
        if options.backend == "docker":  # its pods take their uids from the same range
            add([check_uid_range(options)])
        if options.backend == "swarm":
            add(check_swarm(options.config or GatewayConfig(backend="swarm")))
    add([check_state_dir(options), check_disk(options), check_port(options)])
    if options.config is not None:
        add([check_pool(options.config)])
        add([check_session_disk(options.config)])
    return checks


def check_session_disk(config: GatewayConfig) -> Check:
    """Makes, mounts and removes one session disk as the backends would (``local``,
    ``docker``); on ``swarm`` it is a known gap (docs/SECURITY.md)."""
    size = config.session_disk_mb
    if config.backend == "swarm":
        return Check("session disk", False, False,
                     "not on swarm: a pod's HOME is its 1.5 GiB /tmp tmpfs (memory), "
                     "without --session-disk-mb or a disk event",
                     "see docs/SECURITY.md, Known gaps")
    if not size:
        return Check("session disk", False, False,
                     "off (--session-disk-mb 0): a session can fill the state disk",
                     "--session-disk-mb 2048")
    why = check_support()
    if why:
        return Check("session disk", True, False, why,
                     "run as root with loop devices, or --session-disk-mb 0 (no quota)")
    import tempfile
    import time

    base = _existing_parent(config.state_dir)
    try:
        with tempfile.TemporaryDirectory(prefix=".doctor-disk-", dir=base) as tmp:
            t0 = time.monotonic()
            create_disk(Path(tmp) / "s", size, os.getuid())
            took = (time.monotonic() - t0) * 1000
            release_disk(Path(tmp) / "s")
    except (BackendError, OSError) as e:
        return Check("session disk", True, False, f"cannot make a session disk: {e}",
                     "apt-get install e2fsprogs; modprobe loop; or --session-disk-mb 0")
    return Check("session disk", True, True,
                 f"{size} MiB per session (sparse ext4 image, loop-mounted; made and "
                 f"mounted in {took:.0f} ms)")


def check_pool(config: GatewayConfig) -> Check:
    """The warm pool ``serve`` would keep (--pool-size/--pool) and the pods pooled now."""
    sizes = config.pool_sizes()  # valid: the config was built
    if not sizes:
        return Check("warm pool", False, True, "off (--pool-size 0): every session starts cold")
    try:
        pooled = len(json.loads((config.state_dir / "pool.json").read_text()))
    except (OSError, ValueError):
        pooled = 0
    keys = ", ".join(f"{n} x {key}" for key, n in sizes.items())
    return Check("warm pool", False, True,
                 f"{keys} ({sum(sizes.values())} of max {config.max_sessions} sessions); "
                 f"{pooled} pod(s) pooled now")


def format_check(check: Check) -> str:
    if check.skipped:
        mark = "SKIP"
    elif check.ok:
        mark = "OK"
    else:
        mark = "FAIL" if check.required else "WARN"
    lines = [f"  {mark:<5} {check.name:<19} {check.detail}"]
    if check.fix and not check.ok:
        lines.append(f"  {'':<5} {'':<19} fix: {check.fix}")
    return "\n".join(lines)


def format_report(checks: list[Check]) -> str:
    failed = [c for c in checks if c.failed]
    warned = [c for c in checks if not c.required and not c.ok and not c.skipped]
    required = [c for c in checks if c.required]
    if failed:
        return (f"{len(failed)} of {len(required)} required checks failed: "
                f"{', '.join(c.name for c in failed)}. Fix them, then run "
                "`visual-runtime doctor` again.")
    tail = f" ({len(warned)} warning{'s' if len(warned) != 1 else ''})" if warned else ""
    return f"All {len(required)} required checks passed{tail}."


def to_json(checks: list[Check], options: DoctorOptions) -> dict[str, object]:
    return {
        "ok": not any(c.failed for c in checks),
        "backend": options.backend,
        "state_dir": str(options.state_dir.resolve()),
        "checks": [{**asdict(c), "failed": c.failed} for c in checks],
    }

