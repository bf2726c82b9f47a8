"""Which cgroup hierarchy holds which controller: unified (v2), legacy (v1) or hybrid.

:class:`~gateway.backends.cgroup.Cgroup` puts a pod's memory, CPU and pids
limits on one hierarchy: v2 when ``/sys/fs/cgroup`` is the unified hierarchy,
else v1 below ``/sys/fs/cgroup/<controller>``. A *hybrid* host mounts both: v1
controllers under ``/sys/fs/cgroup`` plus a cgroup2 mount (systemd's
``/sys/fs/cgroup/unified``). That works as long as memory, cpu and pids are all
v1 controllers; a controller taken off v1 (``cgroup_no_v1=memory``) lives only
on the cgroup2 mount, where the backend never looks, so its limit would be
missing. :func:`layout_problem` says so in words `doctor` can print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["FIX", "WANTED", "CgroupLayout", "cgroup_layout", "layout_problem", "parse_mounts"]

WANTED = ("memory", "cpu", "pids")
"""The controllers a pod's limits need."""
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
                            "net_cls", "net_prio", "blkio", "perf_event", "hugetlb", "pids",
                            "rdma", "misc"})
FIX = ("boot with the unified hierarchy only (kernel command line "
       "systemd.unified_cgroup_hierarchy=1, the default of Debian 12 and Ubuntu 22.04+), "
       "or with all of memory, cpu and pids on cgroup v1 (no cgroup_no_v1=...)")


@dataclass(frozen=True)
class CgroupLayout:
    """The cgroup mounts of this machine, as far as the local backend cares."""

    root: str
    """Where the backend looks (``/sys/fs/cgroup``)."""
    mode: Literal["unified", "legacy", "hybrid", "none"]
    v1: dict[str, str] = field(default_factory=dict)
    """v1 controller -> its mount point."""
    v2_mount: str | None = None
    """Where the cgroup2 hierarchy is mounted (the root itself when unified)."""
    v2_controllers: frozenset[str] = frozenset()
    """Controllers the cgroup2 hierarchy has (its ``cgroup.controllers``)."""

    def where(self, controller: str) -> str | None:
        """``"v1"``, ``"v2"`` or None: the hierarchy that has *controller*."""
        if controller in self.v1:
            return "v1"
        if controller in self.v2_controllers:
            return "v2"
        return None


def parse_mounts(mounts: str, root: str = "/sys/fs/cgroup",
                 read_controllers: dict[str, str] | None = None) -> CgroupLayout:
    """The layout from ``/proc/self/mounts`` text.

    *read_controllers* maps a cgroup2 mount point to the text of its
    ``cgroup.controllers`` (read from the file system when not given).
    """
    v1: dict[str, str] = {}
    v2_mount: str | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point, fstype, options = parts[1], parts[2], parts[3].split(",")
        if fstype == "cgroup2" and (v2_mount is None or point == root):
            v2_mount = point
        elif fstype == "cgroup":
            for c in options:
                if c in V1_CONTROLLERS:
                    v1.setdefault(c, point)
    v2_controllers: frozenset[str] = frozenset()
    if v2_mount is not None:
        if read_controllers is not None:
            text = read_controllers.get(v2_mount, "")
        else:
            try:
                text = (Path(v2_mount) / "cgroup.controllers").read_text()
            except OSError:
                text = ""
        v2_controllers = frozenset(text.split())
    mode: Literal["unified", "legacy", "hybrid", "none"]
    if v2_mount == root:
        mode = "unified"
    elif v1 and v2_mount is not None:
        mode = "hybrid"
    elif v1:
        mode = "legacy"
    else:
        mode = "hybrid" if v2_mount is not None else "none"
    return CgroupLayout(root=root, mode=mode, v1=v1, v2_mount=v2_mount,
                        v2_controllers=v2_controllers)


def cgroup_layout(root: str = "/sys/fs/cgroup") -> CgroupLayout:
    try:
        mounts = Path("/proc/self/mounts").read_text()
    except OSError:
        mounts = ""
    return parse_mounts(mounts, root)


def layout_problem(layout: CgroupLayout) -> str | None:
    """Why the backend cannot put every limit on one hierarchy here (None: it can)."""
    if layout.mode != "hybrid":
        return None
    on_v2 = [c for c in WANTED if layout.where(c) == "v2"]
    on_v1 = [c for c in WANTED if layout.where(c) == "v1"]
    if not on_v2:
        return None
    side = (f"while {', '.join(on_v1)} {'is' if len(on_v1) == 1 else 'are'} on cgroup v1"
            if on_v1 else f"while {layout.root} is a cgroup v1 (tmpfs) layout")
    return (f"hybrid cgroup layout: {', '.join(on_v2)} "
            f"{'is' if len(on_v2) == 1 else 'are'} only on the cgroup v2 hierarchy at "
            f"{layout.v2_mount} {side}; the local backend puts a pod's memory, cpu and pids "
            f"limits on one hierarchy (v1 under {layout.root}/<controller> here), so "
            f"sessions would run without a {', '.join(on_v2)} limit")
