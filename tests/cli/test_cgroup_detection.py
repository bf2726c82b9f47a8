"""Which cgroup hierarchy holds memory, cpu and pids, and what `doctor` says on hybrid hosts.

Unit tests of :mod:`gateway.backends.cgroup_layout` on ``/proc/self/mounts``
texts of the three layouts (a unified Debian 12 host, a legacy v1 host, a
systemd hybrid host with and without ``cgroup_no_v1=memory``), then the doctor
check itself with the hybrid layout put in its way, and the real layout of the
machine the test runs on (v1 here, v2 in the guest of scripts/cgroup-v2-vm.sh).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.backends import cgroup_layout as layout_module
from gateway.backends.cgroup import CGROUP_ROOT, cgroup_version
from gateway.backends.cgroup_layout import cgroup_layout, layout_problem, parse_mounts
from gateway.cli.doctor_sandbox import check_cgroups

UNIFIED = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
"""
LEGACY = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
"""
# systemd's hybrid mode (Ubuntu 20.04, Debian 11 with systemd.unified_cgroup_hierarchy=0)
HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,nosuid,nodev,noexec,relatime,pids 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
"""
# the same, booted with cgroup_no_v1=memory: memory is only on the cgroup2 mount
HYBRID_MEMORY_ON_V2 = "\n".join(line for line in HYBRID.splitlines()
                                if not line.startswith("cgroup /sys/fs/cgroup/memory")) + "\n"


def test_unified_host() -> None:
    layout = parse_mounts(UNIFIED, read_controllers={"/sys/fs/cgroup": "cpuset cpu io memory pids"})
    assert layout.mode == "unified"
    assert [layout.where(c) for c in ("memory", "cpu", "pids")] == ["v2", "v2", "v2"]
    assert layout_problem(layout) is None


def test_legacy_host() -> None:
    layout = parse_mounts(LEGACY, read_controllers={})
    assert layout.mode == "legacy"
    assert layout.v1 == {"cpu": "/sys/fs/cgroup/cpu", "memory": "/sys/fs/cgroup/memory",
                         "pids": "/sys/fs/cgroup/pids"}
    assert layout.v2_mount is None
    assert layout_problem(layout) is None


def test_hybrid_host_with_every_controller_on_v1_is_usable() -> None:
    layout = parse_mounts(HYBRID, read_controllers={"/sys/fs/cgroup/unified": ""})
    assert layout.mode == "hybrid"
    assert layout.v2_mount == "/sys/fs/cgroup/unified"
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert [layout.where(c) for c in ("memory", "cpu", "pids")] == ["v1", "v1", "v1"]
    assert layout_problem(layout) is None


def test_hybrid_host_with_memory_on_v2_is_named() -> None:
    layout = parse_mounts(HYBRID_MEMORY_ON_V2,
                          read_controllers={"/sys/fs/cgroup/unified": "memory"})
    assert layout.mode == "hybrid"
    assert layout.where("memory") == "v2" and layout.where("pids") == "v1"
    problem = layout_problem(layout)
    assert problem == (
        "hybrid cgroup layout: memory is only on the cgroup v2 hierarchy at "
        "/sys/fs/cgroup/unified while cpu, pids are on cgroup v1; the local backend puts a "
        "pod's memory, cpu and pids limits on one hierarchy (v1 under "
        "/sys/fs/cgroup/<controller> here), so sessions would run without a memory limit")


def test_doctor_fails_on_a_hybrid_host_and_says_how_to_boot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hybrid = parse_mounts(HYBRID_MEMORY_ON_V2, read_controllers={"/sys/fs/cgroup/unified": "memory"})
    monkeypatch.setattr(layout_module, "cgroup_layout", lambda root="/sys/fs/cgroup": hybrid)
    check = check_cgroups()
    assert check.name == "cgroups" and check.required and not check.ok and check.failed
    assert check.detail.startswith("hybrid cgroup layout: memory is only on the cgroup v2")
    assert "systemd.unified_cgroup_hierarchy=1" in check.fix
    assert "cgroup_no_v1" in check.fix


def test_this_machine_agrees_with_the_backend() -> None:
    """The real mounts: the layout says what Cgroup will use, and doctor's check passes."""
    layout = cgroup_layout(str(CGROUP_ROOT))
    if cgroup_version() == 2:
        assert layout.mode == "unified"
        assert set(Path(CGROUP_ROOT / "cgroup.controllers").read_text().split()) \
            == layout.v2_controllers
    else:
        assert layout.mode in ("legacy", "hybrid")
        assert {"memory", "cpu", "pids"} <= set(layout.v1)
    assert layout_problem(layout) is None
    check = check_cgroups()
    assert check.ok, check
    assert check.detail.startswith(f"cgroup v{cgroup_version()}: memory, cpu and pids limits usable")
