"""Plumbing shared by the cost benchmarks (idle, session_start, fanout, density).

* :class:`ServedGateway` — ``python -m gateway serve`` in a child process on
  127.0.0.1, port 0, with its own temporary state dir, so the benchmark's own
  work (viewers, stimulus) is never counted as gateway CPU;
* pod process discovery by the pod cgroups (``/visual-runtime/<sid>.app`` and
  ``<sid>.agent``, the same rule as ``tests/gateway_fixtures.pod_processes``);
* CPU (``utime + stime`` from ``/proc/<pid>/stat``) and memory (RSS and PSS from
  ``/proc/<pid>/smaps_rollup``) of sets of processes;
* a process census to check that a benchmark left nothing running;
* printing and writing a :class:`~benchmarks.suite.Result` for standalone runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.suite import Result, machine  # noqa: E402
from gateway.backends.xauth import read_cookie  # noqa: E402

__all__ = ["ServedGateway", "TOKEN", "census", "cpu_map", "cpu_pct", "descendants",
           "authorize_display", "find_agent_pid", "link_display", "load_note", "memory_mib",
           "pod_pids", "print_result",
           "proc_name", "wait_for", "write_result"]

TOKEN = "cost-benchmark-token-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_POD_CGROUP = re.compile(r"/visual-runtime/([A-Za-z0-9_-]+)\.(app|agent)")


# -- processes -------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _all_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def descendants(root: int) -> set[int]:
    """Every live descendant of *root* (not *root* itself)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(pid)
    out: set[int] = set()
    frontier = list(children.get(root, []))
    while frontier:
        pid = frontier.pop()
        if pid not in out:
            out.add(pid)
            frontier.extend(children.get(pid, []))
    return out


def pod_pids(session_ids: Iterable[str]) -> dict[str, dict[str, list[int]]]:
    """``{sid: {"app": [...], "agent": [...]}}`` for the pods of *session_ids* (local backend)."""
    wanted = set(session_ids)
    out: dict[str, dict[str, list[int]]] = {sid: {"app": [], "agent": []} for sid in wanted}
    if not wanted:
        return out
    for pid in _all_pids():
        try:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        match = _POD_CGROUP.search(cgroups)
        if match and match.group(1) in wanted:
            out[match.group(1)][match.group(2)].append(pid)
    return out


def stat_cpu_seconds(stat_path: str) -> float:
    """User + system CPU seconds from a ``/proc/<pid>/stat`` or ``/proc/self/task/<tid>/stat``."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_map(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) so far of each live pid."""
    out: dict[int, float] = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_pct(before: dict[int, float], after: dict[int, float], seconds: float) -> float:
    """% of one core used between two :func:`cpu_map` samples.

    A pid that appeared in between counts with all its CPU; one that ended in
    between is lost (its time went to its parent's ``cutime``, which we skip).
    """
    used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return 100.0 * used / seconds if seconds > 0 else 0.0


def memory_mib(pids: Iterable[int]) -> dict[str, float]:
    """Summed ``Rss`` and ``Pss`` (MiB) of *pids* from ``/proc/<pid>/smaps_rollup``."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024}


def census(session_ids: Iterable[str] = ()) -> dict[str, int]:
    """Processes now: all on the machine (others' tests make it noisy), and ours:
    descendants of this process plus pod processes of *session_ids*."""
    ids = list(session_ids)
    pods = sum(len(p["app"]) + len(p["agent"]) for p in pod_pids(ids).values())
    return {"machine": len(_all_pids()), "ours": len(descendants(os.getpid())) + pods}


def load_note(when: str) -> str:
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    note = f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} ({cores} cores)"
    if one > 1.5 * cores:
        note += (" - OVERLOADED: every runnable process gets only a share of a core, so CPU "
                 "figures are capped by scheduling and frame rates and latencies suffer; "
                 "do not compare these figures with a quiet run")
    return note


def chromium_cpu_seconds(profile_marker: str) -> float:
    """CPU seconds of OUR Chromium (browser + children): the browser processes whose
    command line holds *profile_marker* among this program's descendants (other people's
    Playwright browsers on the same machine use the same profile prefix)."""
    return tree_cpu_seconds(profile_marker=profile_marker, under=os.getpid())


def tree_cpu_seconds(pids: tuple[int, ...] = (), profile_marker: str | None = None,
                     under: int | None = None) -> float:
    """CPU seconds of *pids* (or, below the process *under*, the processes whose command
    line holds *profile_marker*, children excepted) and all their descendants.

    Each process counts its own time plus that of its reaped children (cutime/cstime),
    so a renderer that exits during the window does not take its CPU with it."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    marked: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes() if profile_marker else b""
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
        if profile_marker and profile_marker.encode() in cmdline and b"--type=" not in cmdline:
            marked.add(int(entry.name))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)

    def descendants(root: int) -> set[int]:
        out, frontier = set(), [root]
        while frontier:
            pid = frontier.pop()
            if pid not in out:
                out.add(pid)
                frontier.extend(children.get(pid, ()))
        return out

    roots = set(pids)
    if profile_marker:
        roots |= marked & descendants(under) if under is not None else marked
    counted: set[int] = set()
    for root in roots:
        if root in stats:
            counted |= descendants(root)
    return sum(stats[pid][1] for pid in counted if pid in stats)


# -- X display link ---------------------------------------------------------------


def link_display(x_socket: Path) -> tuple[str, list[Path]]:
    """A ``:<n>`` DISPLAY whose socket is *x_socket* (symlink + lock file), for
    X clients of this process (python-xlib, x11vnc) on a pod's display."""
    for n in range(700, 950):
        sock = Path(f"/tmp/.X11-unix/X{n}")
        lock = Path(f"/tmp/.X{n}-lock")
        if sock.exists() or sock.is_symlink() or lock.exists():
            continue
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.write(fd, f"{os.getpid():>10}\n".encode())
        os.close(fd)
        sock.parent.mkdir(exist_ok=True)
        sock.symlink_to(x_socket)
        authorize_display(n, x_socket)
        return f":{n}", [sock, lock]
    raise RuntimeError("no free display number for a pod display link")


def authorize_display(number: int, x_socket: Path) -> None:
    """Add the pod's X cookie (``<runtime>/<sid>/Xauthority``, beside the socket's
    folder) for display ``:<number>`` to this process's ``XAUTHORITY`` file, for
    libX11 clients (FamilyWild) and python-xlib (FamilyLocal, this host name)."""
    cookie = read_cookie(x_socket.parent.parent / "Xauthority")
    path = Path(f"/tmp/vr-bench-{os.getpid()}.xauth")

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    entries = b"".join(
        family.to_bytes(2, "big") + field(address) + field(str(number).encode())
        + field(b"MIT-MAGIC-COOKIE-1") + field(cookie)
        for family, address in ((0xFFFF, b""), (256, socket.gethostname().encode())))
    with open(path, "ab") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(entries)
    os.environ["XAUTHORITY"] = str(path)


def find_agent_pid(sid: str) -> int:
    """PID of the runtime agent of session *sid* (a python -m agent_side process)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"agent_side" in argv and f"--session-id={sid}".encode() in argv and b"-m" in argv
                and b"python" in Path(argv[0].decode(errors="replace")).name.encode()):
            return int(entry.name)
    raise RuntimeError(f"runtime agent of session {sid} not found")


# -- the gateway ------------------------------------------------------------------


class ServedGateway:
    """``visual-runtime serve`` as a child process with a temporary state dir."""

    def __init__(self, *, backend: str = "local", apps: tuple[str, ...] = ("xterm",),
                 max_sessions: int = 8, name: str = "cost",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.backend = backend
        self.extra_args = extra_args
        self.apps = apps
        self.max_sessions = max_sessions
        self.tmp = Path(tempfile.mkdtemp(prefix=f"vr-bench-{name}-"))
        self.state_dir = self.tmp / "state"
        self.runtime_dir = Path("/run/visual-runtime")
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""
        self.http: aiohttp.ClientSession | None = None
        self.session_ids: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        log = self.tmp / "gateway.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--port", "0",
                 "--state-dir", str(self.state_dir), "--token", TOKEN,
                 "--backend", self.backend, "--apps", ",".join(self.apps),
                 "--max-sessions", str(self.max_sessions),
                 "--runtime-dir", str(self.runtime_dir), "--log-level", "WARNING",
                 *self.extra_args],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
            if match:
                self.base = match.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("gateway did not start listening")
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})

    def url(self, path: str) -> str:
        return self.base + path

    async def create(self, **body: Any) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.post(self.url("/api/visual-sessions"), json=body) as resp:
            created: dict[str, Any] = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"create failed ({resp.status}): {created}")
        self.session_ids.append(created["session_id"])
        return created

    async def wait_running(self, sid: str, timeout: float = 180.0) -> dict[str, Any]:
        """Until the session is ``running`` (``?wait=running`` blocks up to 30 s a call;
        a loaded machine may need several); RuntimeError if it ends or *timeout* passes."""
        assert self.http is not None
        deadline = time.monotonic() + timeout
        while True:
            async with self.http.get(self.url(f"/api/visual-sessions/{sid}?wait=running")) as resp:
                session: dict[str, Any] = await resp.json()
            status = session.get("status")
            if status == "running":
                return session
            if status != "starting" or time.monotonic() > deadline:
                raise RuntimeError(f"session {sid} did not start: {session}")

    async def create_running(self, **body: Any) -> dict[str, Any]:
        created = await self.create(**body)
        await self.wait_running(created["session_id"])
        return created

    async def view_token(self, sid: str) -> str:
        """A fresh view token of the session (``POST .../tokens``): one per watcher, as
        separate people would have, so the per-token viewer cap does not apply across them."""
        assert self.http is not None
        async with self.http.post(self.url(f"/api/visual-sessions/{sid}/tokens"),
                                  json={"kind": "view"}) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"minting a view token failed ({resp.status}): {body}")
            return str(body["token"])

    async def whep(self, sid: str, pc: Any, token: str | None = None) -> str:
        """Offer from aiortc *pc* (with *token*, else the API token); apply the answer;
        return the peer's location."""
        from aiortc import RTCSessionDescription

        assert self.http is not None
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.post(self.url(f"/api/visual-sessions/{sid}/whep"),
                                  data=pc.localDescription.sdp, headers=headers) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP failed ({resp.status}): {answer}")
            location = resp.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return location

    async def delete_path(self, path: str) -> None:
        assert self.http is not None
        with contextlib.suppress(aiohttp.ClientError):
            async with self.http.delete(self.url(path)) as resp:
                await resp.read()

    async def stop(self, sid: str) -> None:
        assert self.http is not None
        async with self.http.post(self.url(f"/api/visual-sessions/{sid}/stop")) as resp:
            await resp.read()

    async def delete(self, sid: str) -> None:
        await self.delete_path(f"/api/visual-sessions/{sid}")

    def x_socket(self, sid: str) -> Path:
        return self.runtime_dir / sid / "x11" / "X0"

    async def agent_stats(self, sid: str) -> dict[str, Any]:
        """``GET /stats`` of the session's runtime agent, over its unix socket (local backend)."""
        from gateway.sessions.agent_link import AgentClient

        client = AgentClient(self.runtime_dir / sid / "run" / "agent.sock", sid)
        try:
            return await client.stats()
        finally:
            await client.aclose()

    def agent_pids(self, sid: str) -> list[int]:
        return pod_pids([sid])[sid]["agent"]

    async def aclose(self) -> None:
        """Stop the gateway (it stops its sessions on SIGTERM) and remove its state."""
        if self.http is not None:
            await self.http.close()
            self.http = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        # pods end with the gateway; wait for the last pod process to be reaped
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not any(p["app"] or p["agent"] for p in pod_pids(self.session_ids).values()):
                break
            await asyncio.sleep(0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
                   interval: float = 0.02) -> None:
    """Poll *predicate* until true; RuntimeError after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


# -- output -------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def print_result(result: Result) -> None:
    print(f"\n{result.title}\n")
    rows = [(f.name, _fmt(f.value), f.unit, _fmt(f.baseline), f.baseline_name or "-",
             f"{f.ratio:.2f}x" if f.ratio is not None else "-") for f in result.figures]
    head = ("figure", "value", "unit", "baseline", "baseline is", "ratio")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for note in result.notes:
        print(f"- {note}")


def write_result(result: Result, out_dir: Path) -> Path:
    out = out_dir if out_dir.is_absolute() else ROOT / out_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result.benchmark}.json"
    data = {**result.to_json(), "machine": machine(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
