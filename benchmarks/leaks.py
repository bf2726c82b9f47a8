"""Leak accounting of the load benchmark: countable resources before and after a run.

:func:`take_snapshot` counts, scoped to one run's sessions, the gateway's fds and
children, pod processes, cgroups, mounts, namespaces, veths, iptables rules,
runtime dirs, sockets and slots (the categories are listed in
:mod:`benchmarks.load`); :func:`leaks` is what "after" holds that "before" did not.
The /proc probes here (processes, fds, RSS, CPU ticks, UDP drops) also feed the
load run's sampler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")



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
