"""Load test: N concurrent full-desktop sessions, each watched and driven, with leak accounting.

What one run does (``python -m benchmarks.load --sessions 10 --seconds 60``):

1. starts ``visual-runtime serve`` in a subprocess (its own state dir, the real
   ``local`` backend, the default apps fluxbox + xterm + Chromium,
   ``--max-sessions N``), so the gateway's fds and child processes can be
   counted from outside;
2. baseline: one session alone, with one viewer and one agent loop, for a few
   seconds (same workload, same machine, same run); it also warms up what the
   gateway creates lazily, so the "before" snapshot is taken after it;
3. snapshot "before" (see *Leak accounting*);
4. creates N sessions concurrently and waits until all are ``running``; each
   opens a small counter page in Chromium (typed into the address bar) that
   redraws on every mouse move, click, key and scroll, so every agent action
   changes the screen;
5. attaches one aiortc WHEP viewer per session (view token, H.264, frames
   decoded and counted) and one SSE event follower per session. The viewers
   stand in for browsers on machines of their own, so they get 4 MiB UDP
   receive buffers and ask for a keyframe (PLI) as soon as packets arrive but
   nothing decodes for 1 s (aiortc's stock receiver waits 10-20 s);
6. runs one agent loop per session through the action API for S seconds:
   ``mouse_move``/``left_click``/``type``/``key``/``scroll``/``screenshot`` at
   2-5 actions/s per session, while a sampler records the gateway's RSS, fds,
   threads and CPU, the pods' RSS, machine CPU and load average every second;
7. closes the viewers (WHEP DELETE), stops every session, closes every
   client connection and polls (with a deadline) until the resources are
   back to the "before" snapshot; then stops the gateway (SIGTERM) and checks
   nothing of it is left.

Leak accounting (:class:`Snapshot`) -- scoped to this run's sessions, because
other gateways may run on the same machine:

* ``gateway_fds``: the gateway's open fds by kind (``socket``, ``pipe``, a
  path...); after must equal before;
* ``gateway_children``: every descendant process of the gateway;
* ``pod_processes``: processes in a pod cgroup of one of our sessions, or
  running as the app/agent uid of one of our slots;
* ``cgroups``: ``visual-runtime/<sid>.app|agent``;
* ``mounts``: ``/proc/self/mountinfo`` lines naming our state dir, one of our
  runtime dirs or network namespaces;
* ``netns`` / ``veths``: ``vr-<sid>`` namespaces, ``vrh<slot>`` links;
* ``iptables``: every rule naming ``VR-`` chains or ``vrh`` links (shared,
  machine-wide: must be unchanged);
* ``runtime_dirs`` / ``sockets`` / ``slots``: ``<runtime>/<sid>``, unix
  sockets under the state dir or those runtime dirs, slot files held by our ids.

A leak is anything in "after" that was not in "before". Errors: every
non-2xx answer and every transport failure is recorded with its status.

Starvation: the screen is captured on damage only, so a still screen sends
nothing. A viewer starves when it decodes no frame for more than
``starve_s`` while its session's encoder produced frames
(``visual_runtime_frames_encoded_total`` from ``/metrics``, sampled every
second): see :func:`stall_seconds`.

Prints a summary and writes ``benchmarks/results/load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.suite import Figure, Options, Result, machine  # noqa: E402
from visual_runtime_client.client import (  # noqa: E402
    ApiError,
    ClientError,
    RemoteSession,
    SessionNotRunning,
    VisualRuntimeClient,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
TOKEN = "load-test-token-0123456789abcdef"
TERMINAL = {"stopped", "expired", "failed"}
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Counts every input event on a fixed line, so every action is a new frame. Short, because
# Chromium's address bar autocompletes after every typed key (slow on a busy machine).
PAGE_URL = ("data:text/html,<body%20style=background:navy;color:white;height:9999px;"
            "font-size:40px><p%20id=b%20style=position:fixed>0</p><script>n=0;"
            "onmousemove=onmousedown=onkeydown=onscroll=e=>b.innerText=++n+e.type+scrollY"
            "</script>")


# ----------------------------------------------------------------- options
@dataclass(frozen=True)
class LoadOptions:
    """One load run."""

    sessions: int = 10
    """Concurrent sessions (the gateway's ``--max-sessions`` is set to this)."""
    seconds: float = 60.0
    """Length of the load window (agents acting, viewers watching)."""
    baseline_seconds: float = 8.0
    """Length of the one-session baseline before the load (0: none)."""
    warmup: bool = True
    """Without a baseline, still start and stop one session before the "before" snapshot
    (what the gateway creates once, lazily, is then not counted as a leak)."""
    interval_s: tuple[float, float] = (0.2, 0.5)
    """Each agent starts its next action this long (uniform) after the last one started."""
    resolution: str | None = None
    """Session resolution; None: the gateway's default (1600x900)."""
    apps: str = "fluxbox,xterm,chromium"
    """``--apps`` of the served gateway (default: the full desktop)."""
    starve_s: float = 5.0
    """A viewer that decodes no frame for longer than this during the window starved."""
    settle_s: float = 20.0
    """After the stop, how long resources may take to be released before they count as leaks."""
    state_dir: Path | None = None
    """State dir of the served gateway (None: a fresh temporary one, removed afterwards)."""
    runtime_dir: Path = Path("/run/visual-runtime")
    """``--runtime-dir`` of the served gateway (slots live in ``<runtime_dir>/slots``)."""
    uid_base: int = 200_000
    """The gateway's ``uid_base`` (pods run as uid_base + 2*slot and +1)."""
    seed: int = 8
    """Seed of the action mix (each session gets ``seed + index``)."""
    viewer_rcvbuf_mb: int = 4
    """Receive buffer of the viewers' UDP sockets (0: the system default, ~200 kB)."""


# ----------------------------------------------------------------- records
@dataclass
class ErrorRecord:
    at_s: float
    """Seconds since the load window started (negative: before it)."""
    session_id: str
    what: str
    """``action:left_click``, ``create``, ``whep``, ``stop``..."""
    status: int | None
    """HTTP status; None for a transport failure."""
    detail: str


@dataclass
class SessionRun:
    session_id: str
    slot: int | None = None
    create_s: float = 0.0
    running_s: float = 0.0
    status: str = ""
    actions_ok: int = 0
    actions_failed: int = 0
    by_action: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    frames_total: int = 0
    frames_in_window: int = 0
    first_frame_s: float | None = None
    max_gap_s: float | None = None
    fps: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    whep_delete_status: int | None = None
    final_status: str = ""
    encoded_in_window: int = 0
    """Frames the session's encoder produced during the window (``/metrics``)."""
    stall_s: float | None = None
    """Longest stretch without a decoded frame while the encoder kept producing (see
    :func:`stall_seconds`): this, not ``max_gap_s``, says whether a viewer starved."""
    rtp_lost: int = 0
    """RTP packets the viewer never received (sequence gaps, ``getStats``) by the window end."""
    plis: int = 0
    """Keyframe requests the viewer sent because packets arrived but nothing decoded."""
    ice_pair: str = ""
    """The viewer's nominated ICE pair (viewer address -> runtime agent address)."""
    viewer_states: list[tuple[float, str]] = field(default_factory=list)
    """(seconds since the window opened, ``connectionState``) of the viewer's peer."""
    rtp_packets: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds since the window opened, RTP packets received, lost) every 2 s."""
    logs: dict[str, list[str]] = field(default_factory=dict)
    """Tails of the pod's logs, kept when anything went wrong with this session."""


@dataclass
class Snapshot:
    """Countable resources at one moment (see the module docstring)."""

    at: str
    resources: dict[str, list[str]]
    gateway_threads: int = 0
    gateway_rss_mb: float = 0.0

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.resources.items()}


GLOBAL_CATEGORIES = ("gateway_fds", "iptables")
"""Compared before/after as multisets; every other category is ours alone and must be empty."""


def leaks(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """What *after* holds that *before* did not (per category; empty lists dropped)."""
    found: dict[str, list[str]] = {}
    for name, items in after.resources.items():
        if name in GLOBAL_CATEGORIES:
            extra = Counter(items) - Counter(before.resources.get(name, []))
            left = sorted(extra.elements())
        else:
            left = sorted(items)
        if left:
            found[name] = left
    return found


@dataclass
class LoadReport:
    options: dict[str, Any]
    machine: dict[str, Any]
    gateway_url: str = ""
    sessions: list[SessionRun] = field(default_factory=list)
    baseline: SessionRun | None = None
    errors: list[ErrorRecord] = field(default_factory=list)
    window_s: float = 0.0
    start_all_running_s: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    before: Snapshot | None = None
    after: Snapshot | None = None
    after_gateway_exit: dict[str, list[str]] = field(default_factory=dict)
    leaks: dict[str, list[str]] = field(default_factory=dict)
    gateway_exit_code: int | None = None
    gateway_log_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    udp: dict[str, int] = field(default_factory=dict)
    """UDP sockets and datagrams the kernel dropped (full receive buffer) during the
    viewers' connection to the window's end: the viewers' (this process) and the agents'."""
    lingered: dict[str, Any] = field(default_factory=dict)
    """What was still there right after every session reported ``stopped``, and how many
    seconds it took to go (``items``, ``seconds``)."""
    phases_s: dict[str, float] = field(default_factory=dict)
    """Wall time of each phase: gateway start, baseline, create, page, viewers, window, stop..."""

    # -------------------------------------------------------- derived
    @property
    def server_errors(self) -> list[ErrorRecord]:
        return [e for e in self.errors if e.status is not None and e.status >= 500]

    def latencies(self) -> list[float]:
        return [x for s in self.sessions for x in s.latencies_ms]

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        base = self.baseline.latencies_ms if self.baseline else []
        fps = [s.fps for s in self.sessions]
        gaps = [s.max_gap_s for s in self.sessions if s.max_gap_s is not None]
        gw = [s for s in self.samples if "gateway_cpu_pct" in s]
        return {
            "sessions": len(self.sessions),
            "window_s": round(self.window_s, 1),
            "all_running_s": round(self.start_all_running_s, 2),
            "actions_ok": sum(s.actions_ok for s in self.sessions),
            "actions_failed": sum(s.actions_failed for s in self.sessions),
            "actions_per_s_per_session": round(
                statistics.mean(s.actions_ok for s in self.sessions) / self.window_s, 2)
            if self.sessions and self.window_s else 0.0,
            "action_ms": _pcts(lat),
            "baseline_action_ms": _pcts(base),
            "errors": len(self.errors),
            "errors_by_status": dict(Counter(str(e.status) for e in self.errors)),
            "server_errors_5xx": len(self.server_errors),
            "viewer_fps_min": round(min(fps), 2) if fps else None,
            "viewer_fps_median": round(statistics.median(fps), 2) if fps else None,
            "viewer_max_gap_s": round(max(gaps), 2) if gaps else None,
            "viewer_max_stall_s": max((s.stall_s for s in self.sessions
                                       if s.stall_s is not None), default=None),
            "viewers_starved": [s.session_id for s in self.sessions
                                if s.stall_s is None or not s.frames_in_window
                                or s.stall_s > float(self.options["starve_s"])],
            "frames_encoded_total": sum(s.encoded_in_window for s in self.sessions),
            "rtp_lost_total": sum(s.rtp_lost for s in self.sessions),
            "viewer_plis_total": sum(s.plis for s in self.sessions),
            "frames_total": sum(s.frames_in_window for s in self.sessions),
            "events": dict(sum((Counter(s.events) for s in self.sessions), Counter())),
            "gateway_rss_mb_max": max((s["gateway_rss_mb"] for s in self.samples), default=None),
            "gateway_fds_max": max((s["gateway_fds"] for s in self.samples), default=None),
            "gateway_cpu_pct_mean": round(statistics.mean(s["gateway_cpu_pct"] for s in gw), 1)
            if gw else None,
            "machine_cpu_pct_mean": round(statistics.mean(
                s["machine_cpu_pct"] for s in self.samples if "machine_cpu_pct" in s), 1)
            if any("machine_cpu_pct" in s for s in self.samples) else None,
            "pods_memory_mb_max": max((s["pods_memory_mb"] for s in self.samples), default=None),
            "load_avg_max": max((s["load1"] for s in self.samples), default=None),
            "before": self.before.counts() if self.before else None,
            "after": self.after.counts() if self.after else None,
            "leaks": {k: len(v) for k, v in self.leaks.items()},
            "leaks_total": sum(len(v) for v in self.leaks.values()),
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return data


def _pcts(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"n": len(values), "p50": round(statistics.median(ordered), 1),
            "p95": round(p95, 1), "max": round(ordered[-1], 1)}


# ------------------------------------------------------------ /proc probes
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    uid: int
    comm: str
    state: str
    cgroup: str


def scan_processes() -> list[Proc]:
    procs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        close = stat.rindex(")")
        comm = stat[stat.index("(") + 1:close]
        rest = stat[close + 2:].split()
        uid = -1
        for line in status.splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
        procs.append(Proc(int(entry.name), int(rest[1]), uid, comm, rest[0], cgroup))
    return procs


def descendants(root: int, procs: Iterable[Proc]) -> list[Proc]:
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found: list[Proc] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def fd_kinds(pid: int) -> list[str]:
    """The open fds of *pid*, each as a kind: ``socket``, ``pipe``, ``anon_inode:[...]`` or a path."""
    kinds = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kinds.append(re.sub(r"^(socket|pipe):\[\d+\]$", r"\1", target))
    return sorted(kinds)


def rss_mb(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * PAGE_SIZE / 2**20


def cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def pods_memory_mb(sids: Iterable[str]) -> float:
    """Memory charged to the pods' cgroups (app + agent) of *sids*."""
    from gateway.backends.cgroup import Cgroup
    total = 0
    for sid in sids:
        for name in (f"{sid}.app", f"{sid}.agent"):
            cg = Cgroup(name)
            d = cg.dirs[0]
            f = d / ("memory.current" if cg.version == 2 else "memory.usage_in_bytes")
            with contextlib.suppress(OSError, ValueError):
                total += int(f.read_text())
    return total / 2**20


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def udp_drops(pids: Iterable[int]) -> dict[str, int]:
    """Datagrams dropped by each UDP socket *pids* hold, by socket inode
    (``/proc/net/udp*``: the kernel drops one when the socket's receive buffer is full)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for name in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{name}"))
                    if m:
                        inodes.add(m.group(1))
    drops: dict[str, int] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 12 and fields[9] in inodes:
                    drops[fields[9]] = int(fields[-1])
    return drops


class UdpDrops:
    """Drops of the viewers' (this process) and the runtime agents' UDP sockets, kept
    for sockets that have closed since (a failed peer closes its sockets)."""

    def __init__(self) -> None:
        self.viewer: dict[str, int] = {}
        self.agent: dict[str, int] = {}

    def update(self, sids: set[str]) -> None:
        """Blocking (/proc): run it in a thread."""
        agents = [p.pid for p in scan_processes()
                  if (m := re.search(r"/visual-runtime/([A-Za-z0-9_-]+)\.agent", p.cgroup))
                  and m.group(1) in sids]
        self.viewer.update(udp_drops([os.getpid()]))
        self.agent.update(udp_drops(agents))

    def totals(self) -> dict[str, int]:
        return {"viewer_sockets": len(self.viewer), "viewer_drops": sum(self.viewer.values()),
                "agent_sockets": len(self.agent), "agent_drops": sum(self.agent.values())}


def slot_holders(runtime_dir: Path) -> dict[int, str]:
    """Slot number -> session id, machine-wide (``<runtime_dir>/slots``)."""
    held: dict[int, str] = {}
    d = runtime_dir / "slots"
    if not d.is_dir():
        return held
    for f in d.iterdir():
        if f.name.isdigit():
            with contextlib.suppress(OSError):
                held[int(f.name)] = f.read_text().strip()
    return held


def _run_text(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<{argv[0]} failed: {e}>"
    return out.stdout


def take_snapshot(label: str, gateway_pid: int | None, state_dir: Path, runtime_dir: Path,
                  sids: set[str], slots: dict[str, int], uid_base: int) -> Snapshot:
    """Count everything a session may leave behind (blocking: run it in a thread)."""
    procs = scan_processes()
    res: dict[str, list[str]] = {}
    res["gateway_fds"] = fd_kinds(gateway_pid) if gateway_pid else []
    res["gateway_children"] = sorted(
        f"{p.pid} {p.comm} ({p.state})" for p in descendants(gateway_pid, procs)
    ) if gateway_pid else []
    held = slot_holders(runtime_dir)
    # uids of our slots, unless another gateway's session holds that slot by now
    our_uids: dict[int, str] = {}
    for sid, slot in slots.items():
        holder = held.get(slot)
        if holder is None or holder in sids:
            our_uids[uid_base + 2 * slot] = sid
            our_uids[uid_base + 2 * slot + 1] = sid
    pods = []
    for p in procs:
        m = re.search(r"/visual-runtime/([A-Za-z0-9_-]+)\.(app|agent)", p.cgroup)
        # by cgroup; by uid only outside any other session's cgroup (another gateway's
        # session may run as the uid of a slot we released)
        if (m and m.group(1) in sids) or (p.uid in our_uids and not m):
            pods.append(f"{p.pid} {p.comm} uid={p.uid} ({p.state})")
    res["pod_processes"] = sorted(pods)
    from gateway.backends.cgroup import list_cgroups
    res["cgroups"] = sorted(c for c in list_cgroups() if c.rsplit(".", 1)[0] in sids)
    run_dirs = [str(runtime_dir / sid) for sid in sids]
    netns = {f"vr-{sid}" for sid in sids}
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if (str(state_dir) in line or any(d in line for d in run_dirs)
                    or any(n in line.split() or f"/{n} " in line for n in netns)):
                mounts.append(line)
    res["mounts"] = mounts
    netns_dir = Path("/run/netns")
    res["netns"] = sorted(p.name for p in netns_dir.iterdir()
                          if p.name in netns) if netns_dir.is_dir() else []
    our_links = {f"vrh{slot}" for sid, slot in slots.items()
                 if held.get(slot) in (None, *sids)}
    links = re.findall(r"^\d+: ([^:@]+)", _run_text("ip", "-o", "link", "show"), re.M)
    res["veths"] = sorted(x for x in links if x in our_links)
    rules = [line for table in ("filter", "nat")
             for line in _run_text("iptables", "-w", "-t", table, "-S").splitlines()
             # the local backend's chains only: the docker backend's (VR-DOCKER-*) change
             # with other gateways' docker sessions
             if re.search(r"VR-(INPUT|FORWARD)\b|\bvrh|10\.231\.", line)]
    res["iptables"] = sorted(rules)
    res["runtime_dirs"] = sorted(d for d in run_dirs if Path(d).exists())
    sockets = []
    for base in [state_dir, *map(Path, run_dirs)]:
        if base.is_dir():
            for dirpath, _, files in os.walk(base):
                for f in files:
                    path = Path(dirpath, f)
                    with contextlib.suppress(OSError):
                        if path.is_socket():
                            sockets.append(str(path))
    res["sockets"] = sorted(sockets)
    res["slots"] = sorted(f"{n}={sid}" for n, sid in held.items() if sid in sids)
    threads = 0
    if gateway_pid:
        with contextlib.suppress(OSError):
            threads = len(os.listdir(f"/proc/{gateway_pid}/task"))
    return Snapshot(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), res, threads,
                    round(rss_mb(gateway_pid), 1) if gateway_pid else 0.0)


# ----------------------------------------------------------------- viewer
class Viewer:
    """One aiortc WHEP viewer of a session: decodes H.264 and keeps frame arrival times."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, sid: str, token: str,
                 rcvbuf_mb: int = 4) -> None:
        self.http = http
        self.rcvbuf_mb = rcvbuf_mb
        self.base_url = base_url
        self.sid = sid
        self.token = token
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.frame_times: list[float] = []
        self.offered_at = 0.0
        self.states: list[tuple[float, str]] = []
        self.rcvbuf_bytes: list[int] = []
        self.pair: str = ""
        self.plis = 0
        """Picture-loss requests this viewer sent on a decode stall (see :meth:`_watch`)."""
        """The nominated ICE pair, ``viewer-address -> agent-address`` (once connected)."""
        """SO_RCVBUF of each of this viewer's UDP sockets after growing them."""
        self.rtp: list[tuple[float, int, int]] = []

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            self.states.append((time.monotonic(), self.pc.connectionState))
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        capabilities = RTCRtpReceiver.getCapabilities("video")
        caps = capabilities.codecs if capabilities is not None else []
        transceiver.setCodecPreferences(
            [c for c in caps if c.mimeType.lower() == "video/h264"
             and str(c.parameters.get("packetization-mode")) == "1"])

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for coro in (self._consume(track), self._watch(transceiver.receiver)):
                task = asyncio.create_task(coro)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self.offered_at = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with self.http.post(
            f"{self.base_url}/api/visual-sessions/{self.sid}/whep",
            data=self.pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/sdp"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            body = await resp.read()
            if resp.status != 201:
                raise ApiError(resp.status, _problem(body))
            self.location = resp.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
        if self.rcvbuf_mb:
            self._grow_receive_buffers()

    def _grow_receive_buffers(self) -> None:
        """Give this viewer's UDP sockets a bigger receive buffer (``rcvbuf_mb``).

        A real viewer has a machine of its own; these ten share two cores with the
        sessions they watch, and a default-sized buffer (~200 kB) overflows when
        the test process is off the CPU for a moment. Sender-side stalls still
        show (``stall_s``), and drops are counted either way (:func:`udp_drops`).
        Reaches into aiortc's ICE transport (private attributes): best effort.
        """
        for transceiver in self.pc.getTransceivers():
            ice = getattr(transceiver.receiver.transport, "transport", None)
            connection = getattr(ice, "_connection", None)
            for protocol in getattr(connection, "_protocols", []):
                transport = getattr(protocol, "transport", None)
                sock = transport.get_extra_info("socket") if transport is not None else None
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE,
                                        self.rcvbuf_mb * 2**20)
                        self.rcvbuf_bytes.append(
                            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                self.frame_times.append(time.monotonic())

    def note_pair(self) -> None:
        """Remember the nominated ICE candidate pair (aioice internals; best effort)."""
        for transceiver in self.pc.getTransceivers():
            ice = getattr(transceiver.receiver.transport, "transport", None)
            connection = getattr(ice, "_connection", None)
            pair = (getattr(connection, "_nominated", None) or {}).get(1)
            if pair is not None:
                self.pair = (f"{pair.local_candidate.host}:{pair.local_candidate.port} -> "
                             f"{pair.remote_candidate.host}:{pair.remote_candidate.port}")

    async def sample_rtp(self) -> None:
        """Note the RTP packets received and lost so far (from ``getStats``)."""
        received = lost = 0
        with contextlib.suppress(Exception):  # a closing peer may fail its stats
            report = await self.pc.getStats()
            for stats in report.values():
                if getattr(stats, "type", "") == "inbound-rtp":
                    received += int(getattr(stats, "packetsReceived", 0) or 0)
                    lost += int(getattr(stats, "packetsLost", 0) or 0)
        self.rtp.append((time.monotonic(), received, lost))

    async def _watch(self, receiver: RTCRtpReceiver, every: float = 0.5,
                     stall: float = 1.0) -> None:
        """Send a PLI when packets keep arriving but no frame decodes for *stall* s.

        aiortc's stock receiver asks for a keyframe only when its 128-packet jitter
        buffer overflows after an unrecovered loss: at the few packets per second
        of a desktop stream that is 10-20 s without a picture. Browsers ask at once;
        so does this viewer (once per *stall* s at most).
        """
        seen_frames, base, last_pli = 0, 0, 0.0
        while True:
            await asyncio.sleep(every)
            received, ssrc = 0, None
            with contextlib.suppress(Exception):  # a closing peer may fail its stats
                for stats in (await self.pc.getStats()).values():
                    if getattr(stats, "type", "") == "inbound-rtp":
                        received += int(getattr(stats, "packetsReceived", 0) or 0)
                        ssrc = getattr(stats, "ssrc", None)
            now = time.monotonic()
            if len(self.frame_times) != seen_frames:
                seen_frames, base = len(self.frame_times), received
                continue
            last_frame = self.frame_times[-1] if self.frame_times else self.offered_at
            if (ssrc is not None and received > base and now - last_frame > stall
                    and now - last_pli > stall):
                with contextlib.suppress(Exception):
                    await receiver._send_rtcp_pli(int(ssrc))
                    self.plis += 1
                    last_pli = now

    async def wait_frames(self, count: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while len(self.frame_times) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def delete(self) -> int | None:
        if self.location is None:
            return None
        async with self.http.delete(self.base_url + self.location,
                                    headers={"Authorization": f"Bearer {self.token}"},
                                    timeout=aiohttp.ClientTimeout(total=30)) as resp:
            await resp.read()
            return resp.status

    async def close(self) -> None:
        await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _problem(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {"detail": body[:200].decode(errors="replace")}
    return data if isinstance(data, dict) else {"detail": str(data)[:200]}


def _count_at(series: list[tuple[float, int]], at: float) -> int:
    """The last sampled value at or before *at* (the first one before any sample)."""
    value = series[0][1] if series else 0
    for t, n in series:
        if t > at:
            break
        value = n
    return value


def stall_seconds(frames: list[float], encoded: list[tuple[float, int]], start: float,
                  end: float, lag_s: float = 2.5) -> float:
    """Longest gap between decoded frames (window edges included) during which the
    session's encoder produced at least two frames.

    The screen is captured on damage only, so a gap with nothing encoded is a still
    screen (e.g. Chromium slow to repaint), not a starving viewer. The encoder's
    count comes from ``/metrics`` (refreshed every poll interval, sampled every
    second), so it is read *lag_s* after the gap opens and 0.5 s before it closes;
    two frames, because the last frame before a pause is completed by aiortc's
    stock receiver only when the next one arrives.
    """
    inside = [t for t in frames if start <= t <= end]
    points = [start, *inside, end]
    worst = 0.0
    for a, b in zip(points, points[1:], strict=False):
        if b - a <= worst:
            continue
        if _count_at(encoded, b - 0.5) - _count_at(encoded, a + lag_s) >= 2:
            worst = b - a
    return worst


def parse_encoded(metrics_text: str) -> dict[str, int]:
    """``visual_runtime_frames_encoded_total`` by session id."""
    found = {}
    for m in re.finditer(r'^visual_runtime_frames_encoded_total\{session="([^"]+)"\} (\S+)$',
                         metrics_text, re.M):
        found[m.group(1)] = int(float(m.group(2)))
    return found


def frame_stats(times: list[float], start: float, end: float) -> tuple[int, float]:
    """Frames inside [start, end] and the longest stretch without one (edges included)."""
    inside = [t for t in times if start <= t <= end]
    points = [start, *inside, end]
    gap = max(b - a for a, b in zip(points, points[1:], strict=False))
    return len(inside), gap


# ------------------------------------------------------------- the agent
def next_action(rng: random.Random, width: int, height: int) -> dict[str, Any]:
    """One action of the mix; coordinates stay on the page (below Chromium's toolbar)."""
    x, y = rng.randrange(40, width - 40), rng.randrange(160, height - 40)
    roll = rng.random()
    if roll < 0.30:
        return {"action": "mouse_move", "coordinate": [x, y]}
    if roll < 0.45:
        return {"action": "left_click", "coordinate": [x, y]}
    if roll < 0.62:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
        return {"action": "type", "text": word + " "}
    if roll < 0.75:
        return {"action": "key", "text": rng.choice(["a", "shift+b", "BackSpace", "space",
                                                    "Down", "Up", "Return", "shift+space"])}
    if roll < 0.88:
        return {"action": "scroll", "coordinate": [x, y],
                "scroll_direction": rng.choice(["up", "down"]),
                "scroll_amount": rng.randint(1, 5)}
    return {"action": "screenshot"}


class Recorder:
    """Collects every failed call (non-2xx or transport) with its time and status."""

    def __init__(self) -> None:
        self.errors: list[ErrorRecord] = []
        self.t0 = time.monotonic()
        self.screens: dict[str, bytes] = {}
        """The last screenshot of a session whose page did not open (for the logs)."""

    def add(self, sid: str, what: str, e: BaseException) -> None:
        status = e.status if isinstance(e, ApiError) else None
        detail = e.detail if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
        self.errors.append(ErrorRecord(round(time.monotonic() - self.t0, 3), sid, what,
                                       status, detail[:300]))
        logger.warning("session %s: %s failed: %s %s", sid, what, status, detail[:200])

    async def call(self, sid: str, what: str, coro: Awaitable[T]) -> T | None:
        try:
            return await coro
        except (ClientError, aiohttp.ClientError, TimeoutError) as e:
            self.add(sid, what, e)
            return None


async def agent_loop(session: RemoteSession, run: SessionRun, rec: Recorder,
                     rng: random.Random, width: int, height: int, until: float,
                     interval: tuple[float, float]) -> None:
    """Act until *until* (monotonic); one action at a time, like a computer-use agent."""
    while time.monotonic() < until:
        action = next_action(rng, width, height)
        name = action.pop("action")
        started = time.monotonic()
        try:
            result = await session.act(name, **action)
        except SessionNotRunning as e:
            run.actions_failed += 1
            rec.add(run.session_id, f"action:{name}", e)
            return  # the session ended under the agent: nothing more to drive
        except (ClientError, aiohttp.ClientError, TimeoutError) as e:
            run.actions_failed += 1
            rec.add(run.session_id, f"action:{name}", e)
        else:
            elapsed = (time.monotonic() - started) * 1000
            if name == "screenshot" and not base64.b64decode(
                    result.get("base64_image", ""))[:8] == b"\x89PNG\r\n\x1a\n":
                run.actions_failed += 1
                rec.errors.append(ErrorRecord(round(time.monotonic() - rec.t0, 3),
                                              run.session_id, "action:screenshot", 200,
                                              "the answer holds no PNG"))
            else:
                run.actions_ok += 1
                run.latencies_ms.append(round(elapsed, 2))
                run.by_action[name] = run.by_action.get(name, 0) + 1
        wake = min(until, started + rng.uniform(*interval))
        delay = wake - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def follow_events(session: RemoteSession, run: SessionRun, rec: Recorder) -> None:
    try:
        async with contextlib.aclosing(session.events()) as stream:
            async for event in stream:
                run.events[event.type] = run.events.get(event.type, 0) + 1
    except ClientError as e:
        rec.add(run.session_id, "events", e)


def _pixel(png: bytes, fx: float, fy: float) -> tuple[int, int, int]:
    """The RGB colour at (fx, fy) (fractions of the width/height) of a PNG."""
    with av.open(io.BytesIO(png), mode="r") as container:
        frame = next(container.decode(video=0))
    rgb = frame.to_ndarray(format="rgb24")
    h, w = rgb.shape[:2]
    r, g, b = (int(v) for v in rgb[min(h - 1, int(h * fy)), min(w - 1, int(w * fx))])
    return r, g, b


def page_shown(png: bytes) -> bool:
    """Whether the screen shows the counter page (navy, low on the screen)."""
    r, g, b = _pixel(png, 0.5, 0.9)
    return r <= 0x10 and g <= 0x10 and 0x70 <= b <= 0x90


def chromium_shown(png: bytes) -> bool:
    """Whether Chromium's window is up (its light tab strip at the top; X's root is black)."""
    return min(_pixel(png, 0.5, 0.01)) >= 0x80


async def open_page(session: RemoteSession, rec: Recorder, within: float = 120.0) -> bool:
    """Open the counter page: type its data: URL into Chromium's address bar.

    A session is ``running`` once its display serves frames, which is before
    Chromium's window is up; on a busy machine Chromium also takes seconds to
    handle typed keys. So: wait for the window, type the URL, and wait for the
    page (typing it again only after a long while). Failing calls are recorded;
    False when the page never showed.
    """
    sid = session.session_id
    width, height = _resolution(session)
    # Clicks raise and focus Chromium (full screen) below and right of the xterm
    # (100x30 at +40+40), which may be mapped above it.
    spot = (width * 4 // 5, height * 17 // 20)
    deadline = time.monotonic() + within

    async def shows(check: Callable[[bytes], bool], until: float) -> bool:
        while time.monotonic() < until:
            png = await rec.call(sid, "screenshot", session.view_screenshot())
            if png is not None:
                rec.screens[sid] = png
                if await asyncio.to_thread(check, png):
                    return True
            await asyncio.sleep(0.5)
        return False

    if await shows(chromium_shown, deadline):
        while time.monotonic() < deadline:
            await rec.call(sid, "action:left_click", session.click(*spot))
            await rec.call(sid, "action:key", session.key("ctrl+l"))
            await asyncio.sleep(0.3)
            await rec.call(sid, "action:type", session.type_text(PAGE_URL + "\n"))
            if await shows(page_shown, min(deadline, time.monotonic() + 40)):
                # focus the page, not the address bar: typed words must not navigate
                await rec.call(sid, "action:left_click", session.click(*spot))
                return True
    rec.errors.append(ErrorRecord(round(time.monotonic() - rec.t0, 3), sid, "open-page",
                                  None, f"the counter page did not show within {within} s"))
    return False


# ------------------------------------------------------------ the gateway
@dataclass
class ServedGateway:
    process: subprocess.Popen[bytes]
    base_url: str
    state_dir: Path
    log_path: Path


def start_gateway(opts: LoadOptions, state_dir: Path) -> ServedGateway:
    """``visual-runtime serve`` on a free port, its output in ``<state>/../gateway.log``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir.parent / f"{state_dir.name}-gateway.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", "0", "--state-dir",
             str(state_dir), "--token", TOKEN, "--max-sessions", str(opts.sessions),
             "--apps", opts.apps, "--runtime-dir", str(opts.runtime_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"listening on (http://\S+)", log_path.read_text(errors="replace"))
        if m:
            return ServedGateway(proc, m.group(1), state_dir, log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_gateway(proc)
    raise RuntimeError("visual-runtime serve did not start: "
                       + log_path.read_text(errors="replace")[-2000:])


def stop_gateway(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# ---------------------------------------------------------------- sampler
async def sample(report: LoadReport, gateway_pid: int, sids: set[str], stop: asyncio.Event,
                 t0: float) -> None:
    last_gw, last_busy, last_total, last_t = cpu_ticks(gateway_pid), *machine_ticks(), \
        time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)

        def probe() -> dict[str, Any]:
            return {"pods_memory_mb": round(pods_memory_mb(sids), 1),
                    "gateway_fds": len(fd_kinds(gateway_pid)),
                    "gateway_rss_mb": round(rss_mb(gateway_pid), 1)}

        values = await asyncio.to_thread(probe)
        now = time.monotonic()
        gw, (busy, total) = cpu_ticks(gateway_pid), machine_ticks()
        dt = max(1e-3, now - last_t)
        values["t"] = round(now - t0, 2)
        values["gateway_cpu_pct"] = round((gw - last_gw) / CLK_TCK / dt * 100, 1)
        values["machine_cpu_pct"] = round((busy - last_busy) / max(1, total - last_total)
                                          * 100, 1)
        values["load1"] = round(os.getloadavg()[0], 2)
        report.samples.append(values)
        last_gw, last_busy, last_total, last_t = gw, busy, total, now


# ------------------------------------------------------------------ phases
def _resolution(session: RemoteSession) -> tuple[int, int]:
    w, h = str(session.info.get("resolution", "1600x900")).split("x")
    return int(w), int(h)


async def drive(client: VisualRuntimeClient, http: aiohttp.ClientSession, base_url: str,
                sessions: list[RemoteSession], runs: list[SessionRun], rec: Recorder,
                opts: LoadOptions, seconds: float, report: LoadReport | None,
                gateway_pid: int, sids: set[str], phases: Phases) -> float:
    """Viewers + event followers + agent loops on *sessions* for *seconds*, then the
    viewers' WHEP DELETE and the sessions' stop; returns the window's real length."""
    viewers: list[Viewer] = []
    tasks: set[asyncio.Task[None]] = set()
    udp = UdpDrops()
    stop_udp = asyncio.Event()
    try:
        for s, run in zip(sessions, runs, strict=True):
            task = asyncio.create_task(follow_events(s, run, rec))
            tasks.add(task)
        for s in sessions:
            assert s.tokens is not None
            viewers.append(Viewer(http, base_url, s.session_id, s.tokens["view"],
                                  opts.viewer_rcvbuf_mb))
        await asyncio.gather(*(rec.call(v.sid, "whep", v.connect()) for v in viewers))
        phases.mark("viewers_connect")

        async def sample_udp() -> None:
            # from the first packet on: a peer that fails closes its sockets
            while not stop_udp.is_set():
                await asyncio.to_thread(udp.update, sids)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_udp.wait(), 2.0)

        udp_sampler = asyncio.create_task(sample_udp())
        tasks.add(udp_sampler)
        await asyncio.gather(*(open_page(s, rec) for s in sessions))
        phases.mark("open_page")
        # every viewer must have decoded a picture before the window opens (opening
        # the page changed the screens meanwhile)
        firsts = await asyncio.gather(*(v.wait_frames(1, 45) for v in viewers))
        for v, ok, run in zip(viewers, firsts, runs, strict=True):
            if ok:
                run.first_frame_s = round(v.frame_times[0] - v.offered_at, 3)
            else:
                rec.errors.append(ErrorRecord(round(time.monotonic() - rec.t0, 3), v.sid,
                                              "viewer:first-frame", None,
                                              "no frame within 45 s"))
        start = time.monotonic()
        until = start + seconds
        stop_sampler = asyncio.Event()
        sampler = None
        if report is not None:
            rec.t0 = start
            sampler = asyncio.create_task(sample(report, gateway_pid, sids, stop_sampler, start))

        encoded: dict[str, list[tuple[float, int]]] = {s.session_id: [] for s in sessions}

        async def sample_metrics() -> None:
            while True:
                body = await rec.call("-", "metrics", client.request("GET", "/metrics",
                                                                     expect="bytes"))
                now = time.monotonic()
                if body is not None:
                    for sid, n in parse_encoded(body.decode(errors="replace")).items():
                        if sid in encoded:
                            encoded[sid].append((now, n))
                if stop_sampler.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_sampler.wait(), 1.0)

        async def sample_viewers() -> None:
            while not stop_sampler.is_set():
                await asyncio.gather(*(v.sample_rtp() for v in viewers))
                for v in viewers:
                    v.note_pair()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_sampler.wait(), 2.0)

        rtp_sampler = asyncio.create_task(sample_viewers())
        metrics_sampler = asyncio.create_task(sample_metrics())
        try:
            await asyncio.gather(*(
                agent_loop(s, run, rec, random.Random(opts.seed + i), *_resolution(s), until,
                           opts.interval_s)
                for i, (s, run) in enumerate(zip(sessions, runs, strict=True))))
        finally:
            stop_sampler.set()
            await rtp_sampler
            # one more /metrics after the watcher's next poll, for the window's last frames
            await asyncio.sleep(1.5)
            await metrics_sampler
            if sampler is not None:
                await sampler
        end = time.monotonic()
        phases.mark("window")
        stop_udp.set()
        await udp_sampler
        await asyncio.to_thread(udp.update, sids)
        if report is not None:
            report.udp = udp.totals()
        for v, run in zip(viewers, runs, strict=True):
            run.frames_total = len(v.frame_times)
            run.frames_in_window, gap = frame_stats(v.frame_times, start, end)
            run.max_gap_s = round(gap, 3)
            run.fps = round(run.frames_in_window / (end - start), 2)
            series = encoded[v.sid]
            run.encoded_in_window = _count_at(series, end + 1.5) - _count_at(series, start)
            run.stall_s = round(stall_seconds(v.frame_times, series, start, end), 3)
            run.viewer_states = [(round(at - start, 2), state) for at, state in v.states]
            run.ice_pair = v.pair
            run.plis = v.plis
            if v.rtp:
                run.rtp_lost = v.rtp[-1][2]
            run.rtp_packets = [(round(at - start, 2), n, lost) for at, n, lost in v.rtp]
        for v, run in zip(viewers, runs, strict=True):
            if v.location is not None:
                try:
                    run.whep_delete_status = await v.delete()
                except (aiohttp.ClientError, TimeoutError) as e:
                    rec.add(v.sid, "whep-delete", e)
                else:
                    if run.whep_delete_status != 204:
                        rec.errors.append(ErrorRecord(
                            round(time.monotonic() - rec.t0, 3), v.sid, "whep-delete",
                            run.whep_delete_status, "unexpected status"))
        phases.mark("whep_delete")
        return end - start
    finally:
        stop_udp.set()
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        # the followers end by themselves after the sessions' final status event;
        # whoever aborted early still has them cancelled here
        await _stop_sessions(client, sessions, runs, rec)
        phases.mark("stop")
        try:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            rec.errors.append(ErrorRecord(round(time.monotonic() - rec.t0, 3), "-", "events",
                                          None, "an event stream did not end after the stop"))


async def _stop_sessions(client: VisualRuntimeClient, sessions: list[RemoteSession],
                         runs: list[SessionRun], rec: Recorder) -> None:
    async def stop_one(s: RemoteSession, run: SessionRun) -> None:
        info = await rec.call(s.session_id, "stop", client.stop_session(s.session_id))
        deadline = time.monotonic() + 60
        while info is None or info.get("status") not in TERMINAL:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
            info = await rec.call(s.session_id, "get", s.refresh())
        run.final_status = str(info.get("status")) if info else "?"

    await asyncio.gather(*(stop_one(s, r) for s, r in zip(sessions, runs, strict=True)))


async def create_sessions(client: VisualRuntimeClient, n: int, opts: LoadOptions,
                          rec: Recorder) -> tuple[list[RemoteSession], list[SessionRun]]:
    body: dict[str, Any] = {}
    if opts.resolution:
        body["resolution"] = opts.resolution

    async def one() -> tuple[RemoteSession | None, float, float]:
        t0 = time.monotonic()
        try:
            s = await client.create_session(wait=False, **body)
        except ClientError as e:
            rec.add("-", "create", e)
            return None, 0.0, 0.0
        created = time.monotonic() - t0
        await rec.call(s.session_id, "wait-running", s.refresh(wait=True))
        # a busy machine may need more than one 30 s wait
        deadline = time.monotonic() + 60
        while s.status == "starting" and time.monotonic() < deadline:
            await rec.call(s.session_id, "wait-running", s.refresh(wait=True))
        return s, created, time.monotonic() - t0

    made = await asyncio.gather(*(one() for _ in range(n)))
    sessions, runs = [], []
    for s, created, running in made:
        if s is None:
            continue
        run = SessionRun(s.session_id, create_s=round(created, 3), running_s=round(running, 3),
                         status=s.status or "?")
        if s.status != "running":
            rec.errors.append(ErrorRecord(round(time.monotonic() - rec.t0, 3), s.session_id,
                                          "start", None, f"status {s.status}: "
                                          f"{s.info.get('error')}"))
        sessions.append(s)
        runs.append(run)
    return sessions, runs


# -------------------------------------------------------------------- run
class Phases:
    """Wall time of consecutive phases, into a dict (name -> seconds)."""

    def __init__(self, into: dict[str, float], prefix: str = "") -> None:
        self.into = into
        self.prefix = prefix
        self.t = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.into[self.prefix + name] = round(now - self.t, 2)
        self.t = now


async def run_load(opts: LoadOptions) -> LoadReport:
    """One complete load run against a fresh served gateway (see the module docstring)."""
    report = LoadReport(options={k: (str(v) if isinstance(v, Path) else v)
                                 for k, v in asdict(opts).items()}, machine=machine())
    tmp: str | None = None
    if opts.state_dir is None:
        tmp = tempfile.mkdtemp(prefix="vr-load-")
        state_dir = Path(tmp) / "state"
    else:
        state_dir = opts.state_dir
    phases = Phases(report.phases_s)
    gw = await asyncio.to_thread(start_gateway, opts, state_dir)
    phases.mark("gateway_start")
    report.gateway_url = gw.base_url
    pid = gw.process.pid
    sids: set[str] = set()
    slots: dict[str, int] = {}
    rec = Recorder()

    def learn_slots() -> None:
        for n, sid in slot_holders(opts.runtime_dir).items():
            if sid in sids:
                slots[sid] = n

    async def snapshot(label: str) -> Snapshot:
        return await asyncio.to_thread(take_snapshot, label, pid, state_dir, opts.runtime_dir,
                                       set(sids), dict(slots), opts.uid_base)

    try:
        # -- baseline (and warm-up): one session alone
        if opts.baseline_seconds > 0 or opts.warmup:
            async with aiohttp.ClientSession() as http, \
                    VisualRuntimeClient(gw.base_url, TOKEN, http=http) as client:
                base_sessions, base_runs = await create_sessions(client, 1, opts, rec)
                sids.update(r.session_id for r in base_runs)
                learn_slots()
                if (opts.baseline_seconds > 0 and base_sessions
                        and base_sessions[0].status == "running"):
                    await drive(client, http, gw.base_url, base_sessions, base_runs, rec, opts,
                                opts.baseline_seconds, None, pid, sids,
                                Phases(report.phases_s, "baseline_"))
                    report.baseline = base_runs[0]
                else:
                    await _stop_sessions(client, base_sessions, base_runs, rec)
            phases.mark("baseline" if opts.baseline_seconds > 0 else "warmup")
        report.before = await _settled(snapshot, None, opts.settle_s)
        phases.mark("snapshot_before")
        baseline_errors = len(rec.errors)

        # -- the load
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0)) as http, \
                VisualRuntimeClient(gw.base_url, TOKEN, http=http) as client:
            t0 = time.monotonic()
            sessions, runs = await create_sessions(client, opts.sessions, opts, rec)
            report.start_all_running_s = round(time.monotonic() - t0, 2)
            phases.mark("create")
            report.sessions = runs
            sids.update(r.session_id for r in runs)
            learn_slots()
            for run in runs:
                run.slot = slots.get(run.session_id)
            live = [(s, r) for s, r in zip(sessions, runs, strict=True) if s.status == "running"]
            if live:
                report.window_s = await drive(
                    client, http, gw.base_url, [s for s, _ in live], [r for _, r in live], rec,
                    opts, opts.seconds, report, pid, sids, phases)
            else:
                await _stop_sessions(client, sessions, runs, rec)
        report.notes.append(f"{baseline_errors} error(s) during the baseline")

        # -- leaks: every client connection is closed; wait for the pods to go
        report.after = await _settled(snapshot, report.before, opts.settle_s, report.lingered)
        report.leaks = leaks(report.before, report.after)
        phases.mark("snapshot_after")
    finally:
        report.gateway_exit_code = await asyncio.to_thread(stop_gateway, gw.process)
        phases.mark("gateway_stop")
        left = await asyncio.to_thread(take_snapshot, "exit", None, state_dir, opts.runtime_dir,
                                       set(sids), dict(slots), opts.uid_base)
        report.after_gateway_exit = {k: v for k, v in left.resources.items()
                                     if v and k not in GLOBAL_CATEGORIES}
        troubled = {e.session_id for e in rec.errors}
        if opts.state_dir is not None:
            for sid in troubled & set(rec.screens):
                (state_dir / "sessions" / sid / "logs" / "last-screen.png").write_bytes(
                    rec.screens[sid])
        for run in [*report.sessions, *([report.baseline] if report.baseline else [])]:
            if (run.session_id in troubled or run.final_status != "stopped"
                    or (run.stall_s or 0) > opts.starve_s or not run.frames_in_window):
                run.logs = _log_tails(state_dir / "sessions" / run.session_id / "logs")
        log = gw.log_path.read_text(errors="replace")
        report.gateway_log_errors = [line for line in log.splitlines()
                                     if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)][:50]
        report.errors = rec.errors
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def _log_tails(log_dir: Path, lines: int = 40) -> dict[str, list[str]]:
    tails: dict[str, list[str]] = {}
    for name in ("agent.log", "app.log"):
        with contextlib.suppress(OSError):
            text = (log_dir / name).read_text(errors="replace").splitlines()
            tails[name] = [line for line in text if "aioice" not in line][-lines:]
    return tails


async def _settled(snapshot: Callable[[str], Awaitable[Snapshot]], before: Snapshot | None,
                   within: float, lingered: dict[str, Any] | None = None) -> Snapshot:
    """Poll until nothing of ours is left (and, given *before*, the shared counts match).

    *lingered* gets what was still there at the first look and how long it took to go.
    """
    t0 = time.monotonic()
    deadline = t0 + within
    first = True
    while True:
        snap = await snapshot("settle")
        pending = leaks(before, snap) if before is not None else {
            k: v for k, v in snap.resources.items() if v and k not in GLOBAL_CATEGORIES}
        if first and lingered is not None:
            lingered["items"] = pending
        first = False
        if not pending or time.monotonic() > deadline:
            if lingered is not None:
                lingered["seconds"] = round(time.monotonic() - t0, 2)
            return snap
        await asyncio.sleep(0.25)


# ------------------------------------------------------------ reporting
def print_summary(report: LoadReport, out: Callable[[str], None] = print) -> None:
    s = report.summary()
    out(f"load: {s['sessions']} sessions x {s['window_s']} s "
        f"(all running after {s['all_running_s']} s), gateway {report.gateway_url}")
    a, b = s["action_ms"], s["baseline_action_ms"]
    out(f"  actions ok {s['actions_ok']}, failed {s['actions_failed']}, "
        f"{s['actions_per_s_per_session']}/s per session")
    out(f"  action latency ms  p50 {a['p50']}  p95 {a['p95']}  max {a['max']}  (n={a['n']})")
    out(f"  baseline (1 session) p50 {b['p50']}  p95 {b['p95']}  max {b['max']}  (n={b['n']})")
    out(f"  viewers: fps min {s['viewer_fps_min']} median {s['viewer_fps_median']}, "
        f"longest gap {s['viewer_max_gap_s']} s, longest stall (gap while frames were "
        f"encoded) {s['viewer_max_stall_s']} s, starved {len(s['viewers_starved'])}; "
        f"frames decoded {s['frames_total']} of {s['frames_encoded_total']} encoded")
    out(f"  errors {s['errors']} {s['errors_by_status']}, 5xx {s['server_errors_5xx']}")
    out(f"  events {s['events']}")
    out(f"  UDP receive-buffer drops, viewers connected -> window end: {report.udp}; "
        f"RTP packets lost {s['rtp_lost_total']}, viewer PLIs {s['viewer_plis_total']}")
    out(f"  gateway rss max {s['gateway_rss_mb_max']} MB, fds max {s['gateway_fds_max']}, "
        f"cpu mean {s['gateway_cpu_pct_mean']} %; pods memory max {s['pods_memory_mb_max']} MB; "
        f"machine cpu mean {s['machine_cpu_pct_mean']} %, load1 max {s['load_avg_max']}")
    out(f"  before {s['before']}")
    out(f"  after  {s['after']}")
    out(f"  leaks {s['leaks_total']} {report.leaks or ''}")
    out(f"  phases (s) {report.phases_s}")
    if report.lingered.get("items"):
        out(f"  still there right after the stop (gone after {report.lingered['seconds']} s): "
            f"{ {k: len(v) for k, v in report.lingered['items'].items()} }")
    if report.after_gateway_exit:
        out(f"  left after the gateway exited: {report.after_gateway_exit}")
    for run in report.sessions:
        lat = _pcts(run.latencies_ms)
        out(f"    {run.session_id[:10]} slot {run.slot} running {run.running_s:5.2f}s "
            f"actions {run.actions_ok:4d}/{run.actions_failed} p50 {lat['p50']} "
            f"p95 {lat['p95']} frames {run.frames_in_window:4d}/{run.encoded_in_window} "
            f"({run.fps} fps) gap {run.max_gap_s}s stall {run.stall_s}s "
            f"events {sum(run.events.values())} -> {run.final_status}")
    for e in report.errors[:20]:
        out(f"    error t={e.at_s}s {e.session_id[:10]} {e.what} {e.status} {e.detail[:120]}")


def write_json(report: LoadReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=1) + "\n")


def run(opts: Options) -> Result:
    """The benchmark runner's entry point (quick: 2 sessions for 8 s)."""
    load_opts = LoadOptions(sessions=2, seconds=8.0, baseline_seconds=3.0) if opts.quick \
        else LoadOptions()
    report = asyncio.run(run_load(load_opts))
    write_json(report, opts.out_dir / "load.json")
    s = report.summary()
    a, b = s["action_ms"], s["baseline_action_ms"]
    name = f"{s['sessions']} sessions x {s['window_s']:.0f} s"
    result = Result("load", f"Load: {name}, full desktops, one viewer + one agent each")
    result.figures += [
        Figure(f"action latency p50, {name}", a["p50"], "ms", b["p50"], "1 session alone"),
        Figure(f"action latency p95, {name}", a["p95"], "ms", b["p95"], "1 session alone"),
        Figure(f"viewer frames/s, slowest of {s['sessions']}", s["viewer_fps_min"], "fps",
               report.baseline.fps if report.baseline else None, "1 session alone",
               lower_is_better=False),
        Figure("longest viewer stall (no frame decoded while frames were encoded)",
               s["viewer_max_stall_s"], "s", target=f"<= {load_opts.starve_s} s"),
        Figure("longest gap between decoded frames (a still screen sends none)",
               s["viewer_max_gap_s"], "s"),
        Figure("5xx answers", float(s["server_errors_5xx"]), "responses", target="0"),
        Figure("errors (non-2xx + transport)", float(s["errors"]), "responses", target="0"),
        Figure("leaked resources after stop", float(s["leaks_total"]), "items", target="0"),
        Figure("gateway RSS, max", s["gateway_rss_mb_max"], "MB"),
        Figure("machine CPU, mean", s["machine_cpu_pct_mean"], "%"),
    ]
    result.series = {"samples": report.samples,
                     "latencies_ms": {r.session_id: r.latencies_ms for r in report.sessions}}
    result.notes.append(f"leaks: {report.leaks or 'none'}; errors by status: "
                        f"{s['errors_by_status']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=8.0)
    parser.add_argument("--resolution", default=None)
    parser.add_argument("--apps", default="fluxbox,xterm,chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load.json")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--viewer-rcvbuf-mb", type=int, default=4,
                        help="UDP receive buffer of the viewers (0: system default)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="keep the gateway's state (logs) here instead of a temporary dir")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = LoadOptions(sessions=args.sessions, seconds=args.seconds,
                       baseline_seconds=args.baseline_seconds, resolution=args.resolution,
                       apps=args.apps, state_dir=args.state_dir,
                       viewer_rcvbuf_mb=args.viewer_rcvbuf_mb)
    report = asyncio.run(run_load(opts))
    print_summary(report)
    write_json(report, args.out)
    print(f"wrote {args.out}")
    s = report.summary()
    ok = not s["errors"] and not s["leaks_total"] and not s["viewers_starved"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
