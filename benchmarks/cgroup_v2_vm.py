"""The local backend on a cgroup v2 kernel: a QEMU/KVM guest (full mode only).

Runs ``scripts/cgroup-v2-vm.sh`` (builds or reuses ``build/cgroup-v2-vm/``, a
Debian 12 image with Debian's kernel, then boots it with only the unified
cgroup hierarchy and runs ``visual-runtime doctor``, a session round trip and
the limits tests inside), and a second, short boot of the same image as a
*hybrid* host (``systemd.unified_cgroup_hierarchy=0 cgroup_no_v1=memory``),
where ``doctor`` must fail with the hybrid message. Not a speed benchmark:
the figures are counts (tests passed out of run, round-trip steps) and the
guest's own times; the module fails when anything in the guest failed.
Takes ~20 minutes on 2 cores the first time (image build), ~10 after, which is
why CI does not run it (README, "Tests").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.suite import Figure, Options, Result

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "cgroup-v2-vm.sh"
QUICK_TESTS = "tests/cli/test_cgroup_detection.py tests/gateway/test_smoke.py"


def _boot(out: Path, *extra: str) -> tuple[int, dict[str, Any] | None]:
    proc = subprocess.run([str(SCRIPT), "all", "--out", str(out), *extra], cwd=ROOT,
                          stdout=sys.stdout, stderr=subprocess.STDOUT, check=False)
    try:
        return proc.returncode, json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return proc.returncode, None


def run(opts: Options) -> Result:
    result = Result(benchmark="cgroup_v2_vm",
                    title="Local backend on a cgroup v2 kernel (QEMU/KVM guest, Debian 12)")
    out = opts.out_dir / "cgroup_v2_vm"
    out.mkdir(parents=True, exist_ok=True)
    code, res = _boot(out / "unified", *(("--tests", QUICK_TESTS) if opts.quick else ()))
    failures: list[str] = []
    if res is None:
        raise SystemExit(f"the cgroup v2 guest produced no results (exit status {code})")
    tests = res["pytest"]["tests"]
    passed = sum(1 for t in tests.values() if t["outcome"] == "passed")
    steps = (res["roundtrip"]["report"] or {}).get("steps", [])
    doctor = res["doctor"]["report"] or {}
    result.notes.append(f"guest kernel {res['kernel']}; cgroup v2 only: {res['cgroup2_only']}; "
                        f"controllers: {' '.join(res['cgroup_controllers'])}")
    result.figures += [
        Figure("limits and isolation tests passed in the guest", passed, "tests",
               baseline=len(tests), baseline_name="tests run", lower_is_better=False,
               target="all"),
        Figure("session round trip steps passed", sum(1 for s in steps if s["ok"]), "steps",
               baseline=len(steps), baseline_name="steps run", lower_is_better=False,
               target="all"),
        Figure("doctor checks failed (cgroup v2 guest)",
               sum(1 for c in doctor.get("checks", []) if c.get("required") and not c.get("ok")),
               "checks", target="0"),
    ]
    for s in steps:
        if "seconds" in s:
            result.figures.append(Figure(f"guest: {s['step']}", s["seconds"], "s",
                                         note="inside the VM, 2 vCPUs"))
    cg = next((c for c in doctor.get("checks", []) if c.get("name") == "cgroups"), {})
    result.notes.append(f"doctor (v2): {cg.get('detail')}")
    for name, t in tests.items():
        if t["outcome"] != "passed":
            failures.append(f"{name}: {t['outcome']}")
    failures += [f"round trip: {s['step']}" for s in steps if not s["ok"]]
    if not res["cgroup2_only"]:
        failures.append("the guest was not booted with only cgroup v2")
    if res["doctor"]["exit"] != 0:
        failures.append(f"doctor exit status {res['doctor']['exit']}")
    if not opts.quick:
        hcode, hres = _boot(out / "hybrid", "--mode", "hybrid")
        hdoc = (hres or {}).get("doctor", {})
        hcheck = next((c for c in (hdoc.get("report") or {}).get("checks", [])
                       if c.get("name") == "cgroups"), {})
        result.notes.append(f"doctor (hybrid, cgroup_no_v1=memory): exit {hdoc.get('exit')}: "
                            f"{hcheck.get('detail')}")
        if hdoc.get("exit") == 0 or "hybrid cgroup layout" not in str(hcheck.get("detail")):
            failures.append("hybrid boot: doctor did not fail with the hybrid message")
    result.notes += [f"FAILED: {f}" for f in failures]
    if failures:
        print("\n".join(result.notes), flush=True)
        raise SystemExit("failed in the guest: " + "; ".join(failures))
    return result
