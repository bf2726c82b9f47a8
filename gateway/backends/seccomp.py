"""The local backend's seccomp filter: the docker backend's profile, compiled for bubblewrap.

Both backends confine their sandboxes with the same allow list,
``container/seccomp-chromium.json`` (Docker's default profile plus ``clone``,
``unshare`` and ``chroot`` for Chromium's own namespace sandbox; see
``container/make-seccomp.py``). Docker compiles it inside the engine; here
libseccomp (through ``pyseccomp``, ctypes over ``libseccomp.so.2``) compiles it
to a classic BPF program once per gateway, and bubblewrap installs it on
``--seccomp FD`` just before it runs the sandbox's first program.

The profile is read the way Docker reads it for a container with no
capabilities (``cap_drop=ALL``, which is what the pods are after ``setpriv``):

* a rule that ``includes`` capabilities is left out, one that ``excludes``
  them is kept; ``includes.arches``/``excludes.arches`` are matched against
  this machine's architecture (Docker's names: ``amd64``, ``arm64``, ...);
  ``includes.minKernel`` against the running kernel;
* anything not allowed fails with ``errnoRet`` of its rule, else EPERM (so
  ``clone3`` gets ENOSYS and glibc falls back to ``clone``);
* syscall names this libseccomp does not know are skipped, as Docker does.

Only the native ABI is allowed: Docker also admits the ``x86``/``x32`` ABIs on
x86-64 (its ``archMap``), this filter does not. A syscall made through another
ABI (``int 0x80``, or an x32 number with bit 30 set) kills the process
(libseccomp's bad-architecture action), so no number escapes the allow list by
being read in another table.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, Final

from ..errors import BackendError

SECCOMP_FD: Final = "{seccomp_fd}"
"""Placeholder in a bwrap argv for the descriptor :func:`bpf_fd` returns."""

_GO_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "i386": "x86",
                   "armv7l": "arm", "s390x": "s390x", "ppc64le": "ppc64le",
                   "riscv64": "riscv64"}


def default_profile() -> Path:
    """``container/seccomp-chromium.json`` of this checkout: the docker pods' profile."""
    return Path(__file__).resolve().parents[2] / "container" / "seccomp-chromium.json"


def _kernel() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _applies(rule: dict[str, Any], arch: str) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps"):
        return False  # the sandboxes hold no capability
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if arch in (exc.get("arches") or []):
        return False
    if inc.get("minKernel"):
        want = tuple(int(x) for x in str(inc["minKernel"]).split(".")[:2])
        if _kernel() < want:
            return False
    return True


def compile_profile(profile: dict[str, Any]) -> bytes:
    """The BPF program (``struct sock_filter`` array) of a Docker seccomp *profile*."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as e:  # OSError: libseccomp.so.2 missing
        raise BackendError(f"seccomp needs pyseccomp and libseccomp2: {e}") from e
    ops = {"SCMP_CMP_NE": sc.NE, "SCMP_CMP_LT": sc.LT, "SCMP_CMP_LE": sc.LE,
           "SCMP_CMP_EQ": sc.EQ, "SCMP_CMP_GE": sc.GE, "SCMP_CMP_GT": sc.GT,
           "SCMP_CMP_MASKED_EQ": sc.MASKED_EQ}
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        raise BackendError("the seccomp profile must deny by default (SCMP_ACT_ERRNO)")
    arch = _GO_ARCH.get(platform.machine(), platform.machine())
    filt = sc.SyscallFilter(sc.ERRNO(int(profile.get("defaultErrnoRet") or errno.EPERM)))
    for rule in profile.get("syscalls", []):
        if not _applies(rule, arch):
            continue
        if rule["action"] == "SCMP_ACT_ALLOW":
            action = sc.ALLOW
        elif rule["action"] == "SCMP_ACT_ERRNO":
            action = sc.ERRNO(int(rule.get("errnoRet") or errno.EPERM))
        else:
            raise BackendError(f"seccomp action {rule['action']} is not supported")
        args = [sc.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0))
                for a in rule.get("args") or []]
        for name in rule["names"]:
            try:
                filt.add_rule(action, name, *args)
            except (OSError, ValueError):
                continue  # unknown to this libseccomp/architecture, or the default action
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise BackendError("libseccomp produced no BPF program")
    return program


@cache
def local_program(path: Path | None = None) -> bytes:
    """The compiled program of *path* (default :func:`default_profile`), once per process."""
    profile_path = path or default_profile()
    try:
        profile = json.loads(profile_path.read_text())
    except (OSError, ValueError) as e:
        raise BackendError(f"cannot read the seccomp profile {profile_path}: {e}") from e
    return compile_profile(profile)


def bpf_fd(program: bytes) -> int:
    """A new descriptor to read *program* from (bwrap reads it to the end, then closes it)."""
    fd = os.memfd_create("vr-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
