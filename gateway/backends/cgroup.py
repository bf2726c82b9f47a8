"""Per-pod cgroups on whichever hierarchy is mounted (v1 controllers or v2 unified)."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "cpu", "pids")
_PARENT = "visual-runtime"


def cgroup_version() -> int:
    return 2 if (CGROUP_ROOT / "cgroup.controllers").exists() else 1


class Cgroup:
    """One cgroup ``visual-runtime/<name>`` with memory, CPU and pids limits."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = cgroup_version()

    @property
    def dirs(self) -> list[Path]:
        if self.version == 2:
            return [CGROUP_ROOT / _PARENT / self.name]
        return [CGROUP_ROOT / c / _PARENT / self.name for c in _V1_CONTROLLERS]

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def create(self, memory_bytes: int, cpus: float, pids: int) -> None:
        period = 100_000
        quota = max(1000, int(cpus * period))
        if self.version == 2:
            parent = CGROUP_ROOT / _PARENT
            parent.mkdir(exist_ok=True)
            _enable_controllers(CGROUP_ROOT)
            _enable_controllers(parent)
            d = self.dirs[0]
            d.mkdir(exist_ok=True)
            _write(d / "memory.max", str(memory_bytes))
            _write(d / "memory.swap.max", "0", optional=True)
            _write(d / "cpu.max", f"{quota} {period}")
            _write(d / "pids.max", str(pids))
            return
        mem, cpu, pid = self.dirs
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        _write(mem / "memory.limit_in_bytes", str(memory_bytes))
        _write(cpu / "cpu.cfs_period_us", str(period))
        _write(cpu / "cpu.cfs_quota_us", str(quota))
        _write(pid / "pids.max", str(pids))

    def memory_current(self) -> int | None:
        """Bytes of memory charged to the cgroup now (None when it is gone)."""
        d = self.dirs[0]
        for name in ("memory.current", "memory.usage_in_bytes"):
            try:
                return int((d / name).read_text())
            except (OSError, ValueError):
                continue
        return None

    def pids(self) -> set[int]:
        found: set[int] = set()
        for f in self.procs_files:
            try:
                found.update(int(line) for line in f.read_text().split())
            except FileNotFoundError:
                continue
        return found

    def limit_events(self) -> dict[str, int]:
        """How often each limit was hit since the cgroup was made: ``pids`` (forks
        refused at ``pids.max``) and ``memory`` (processes OOM-killed at the limit)."""
        counts: dict[str, int] = {}
        if self.version == 2:
            d = self.dirs[0]
            counts["pids"] = _field(d / "pids.events", "max")
            counts["memory"] = _field(d / "memory.events", "oom_kill")
        else:
            mem, _, pid = self.dirs
            counts["pids"] = _field(pid / "pids.events", "max")
            counts["memory"] = _field(mem / "memory.oom_control", "oom_kill")
        return counts

    def exists(self) -> bool:
        return any(d.exists() for d in self.dirs)

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup until it is empty."""
        d = self.dirs[0]
        if self.version == 2 and (d / "cgroup.kill").exists():
            _write(d / "cgroup.kill", "1", optional=True)
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                logger.warning("cgroup %s still has pids %s", self.name, sorted(pids))
                return
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the cgroup directories (idempotent)."""
        if not self.exists():
            return
        self.kill_all()
        for d in self.dirs:
            deadline = time.monotonic() + 5
            while d.exists():
                try:
                    d.rmdir()
                except FileNotFoundError:
                    break
                except OSError:
                    # EBUSY while the last killed tasks are being reaped
                    if time.monotonic() > deadline:
                        logger.warning("could not remove cgroup %s", d)
                        break
                    time.sleep(0.02)


def limit_events_of(pid: int) -> dict[str, int]:
    """:meth:`Cgroup.limit_events` of whatever cgroup *pid* is in (e.g. a container's)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path.lstrip("/")
    if cgroup_version() == 2:
        d = CGROUP_ROOT / paths.get("", "")
        return {"pids": _field(d / "pids.events", "max"),
                "memory": _field(d / "memory.events", "oom_kill")}
    return {"pids": _field(CGROUP_ROOT / "pids" / paths.get("pids", "") / "pids.events", "max"),
            "memory": _field(CGROUP_ROOT / "memory" / paths.get("memory", "") / "memory.oom_control",
                             "oom_kill")}


def list_cgroups() -> list[str]:
    """Names of pod cgroups left under ``visual-runtime``."""
    if cgroup_version() == 2:
        parent = CGROUP_ROOT / _PARENT
    else:
        parent = CGROUP_ROOT / "pids" / _PARENT
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.is_dir())


def _field(path: Path, key: str) -> int:
    """The number after *key* in a flat-keyed cgroup file (0 if absent)."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _enable_controllers(d: Path) -> None:
    wanted = {"memory", "cpu", "pids"}
    try:
        available = set((d / "cgroup.controllers").read_text().split())
        enabled = set((d / "cgroup.subtree_control").read_text().split())
    except OSError:
        return
    for c in sorted((wanted & available) - enabled):
        _write(d / "cgroup.subtree_control", f"+{c}", optional=True)


def _write(path: Path, value: str, optional: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        if not optional:
            raise
        logger.debug("could not write %s to %s: %s", value, path, e)
