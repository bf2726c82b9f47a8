"""Run every benchmark and write the report: ``python -m benchmarks``.

::

    python -m benchmarks [--quick] [--only name,...] [--out DIR] [--resolutions 1600x900,...]

Each module of ``MODULES`` that exists runs in a fresh subprocess
(``python -m benchmarks --child NAME``) so a crash, a hang or a leaked
process cannot spoil the next one. The runner is a child subreaper: whatever
a module leaves behind (Xvfb, x11vnc, Chromium, a gateway) is reparented to
it, reported in the table and killed by PID. A module that fails, times out
or leaks is marked failed; the others still run and the exit status is 1 at
the end. The machine and its load average before/after each module are noted.

Writes ``latest.md``, ``latest.json``, PNG plots and each module's output
(``logs/<name>.log``, not committed) to ``--out``
(default ``benchmarks/results/``; CI passes a temporary folder so the
committed results stay as they are). No time is asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.suite import Options, Result, machine  # noqa: E402

MODULES: tuple[str, ...] = (
    "viewer_latency",      # Chromium: WebRTC, WS+WebCodecs, noVNC; x11vnc+noVNC baselines
    "page_content",        # a real page in the session's Chromium at 60 Hz vs x11vnc+noVNC
    "glass_to_glass",      # aiortc receiver; naive fixed-tick baseline
    "agent_pipeline",      # encoder CPU and PSNR vs a naive pipeline (full mode only)
    "idle",                # idle session CPU
    "session_start",       # start-to-first-frame per backend
    "gvisor",              # docker app container on runsc vs runc (start, page load, CPU, latency)
    "fanout",              # 1, 5, 10 viewers
    "recording_overhead",  # recorder CPU
    "density",             # idle sessions with Chromium before p95 doubles
    "load",                # 10-session load
    "swarm",               # swarm vs docker backend; the three-node test (full mode only)
    "cgroup_v2_vm",        # local backend in a cgroup v2 and a hybrid QEMU guest (full mode only)
)
"""Run order. A module whose file does not exist yet is listed as missing."""
FULL_ONLY: frozenset[str] = frozenset({"agent_pipeline", "swarm", "cgroup_v2_vm"})
"""Skipped in quick mode (not a figure of the issue; keeps quick under 3 minutes)."""
TIMEOUT_S = {True: 480.0, False: 3600.0}
"""Per-module wall-time limit, quick / full: a hang guard, not a target (session_start took
236 s in quick mode on a loaded 2-core machine: warm and cold on both backends, the burst)."""
PR_SET_CHILD_SUBREAPER = 36


def run_child(name: str, opts_path: Path, result_path: Path) -> int:
    """In the subprocess: import the module, call ``run(opts)``, write the Result."""
    raw = json.loads(opts_path.read_text())
    opts = Options(quick=raw["quick"], resolutions=tuple(raw["resolutions"]),
                   samples=raw["samples"], out_dir=Path(raw["out_dir"]))
    module = importlib.import_module(f"benchmarks.{name}")
    run = getattr(module, "run", None)
    if run is None:
        raise SystemExit(f"benchmarks.{name} has no run(opts) (see benchmarks/suite.py)")
    result = run(opts)
    if not isinstance(result, Result):
        raise SystemExit(f"benchmarks.{name}.run returned {type(result).__name__}, not Result")
    result_path.write_text(json.dumps(result.to_json(), default=str))
    return 0


def result_from_json(data: dict[str, Any]) -> Result:
    return Result.from_json(data)


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is *pid* (orphans a module left behind, thanks to the subreaper)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def describe(pid: int) -> str:
    try:
        argv = (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} {' '.join(a.decode(errors='replace') for a in argv[:3])[:80]}"


def reap_leftovers(grace_s: float = 3.0) -> list[str]:
    """Kill (by PID) what the last module left behind; return their descriptions."""
    me = os.getpid()
    deadline = time.monotonic() + grace_s
    left = children_of(me)
    while left and time.monotonic() < deadline:  # exiting processes get a moment
        time.sleep(0.1)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        left = children_of(me)
    found = [describe(pid) for pid in left]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in children_of(me):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + 3
        while children_of(me) and time.monotonic() < end:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-1, os.WNOHANG)
            time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    return found


def run_module(name: str, opts: Options, workdir: Path) -> Result:
    opts_path, result_path = workdir / f"{name}.opts.json", workdir / f"{name}.result.json"
    opts_path.write_text(json.dumps({"quick": opts.quick, "resolutions": list(opts.resolutions),
                                     "samples": opts.samples, "out_dir": str(opts.out_dir)}))
    load_before = os.getloadavg()
    t0 = time.monotonic()
    error: str | None = None
    log_path = workdir / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "--child", name, "--opts", str(opts_path),
             "--result", str(result_path)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=TIMEOUT_S[opts.quick])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
            error = f"timed out after {TIMEOUT_S[opts.quick]:.0f} s"
    seconds = time.monotonic() - t0
    leftovers = reap_leftovers()
    logs = opts.out_dir / "logs"
    logs.mkdir(exist_ok=True)
    shutil.copyfile(log_path, logs / f"{name}.log")
    tail = log_path.read_text(errors="replace").strip().splitlines()[-12:]
    if error is None and code != 0:
        error = f"exit status {code}: " + " | ".join(line.strip() for line in tail[-4:])
    if error is None:
        try:
            result = result_from_json(json.loads(result_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            error = f"no readable result: {e}"
    if error is not None:
        result = Result(benchmark=name, title=name, notes=[f"log: {line}" for line in tail])
    if leftovers:
        note = f"left {len(leftovers)} process(es) behind (killed): " + "; ".join(leftovers)
        result.notes.append(note)
        error = error or note
    result.seconds = seconds
    result.load_before = load_before
    result.load_after = os.getloadavg()
    result.error = error
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples, first resolution only (the suite in < 3 minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(MODULES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="output folder (default %(default)s)")
    parser.add_argument("--resolutions", default="1600x900,1920x1080")
    parser.add_argument("--samples", type=int, default=None,
                        help="latency samples per scenario (default 60, quick 12)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--opts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, args.opts, args.result)

    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {', '.join(MODULES)}")
    resolutions = tuple(r for r in args.resolutions.split(",") if r)
    for res in resolutions:
        w, _, h = res.partition("x")
        if not (w.isdigit() and h.isdigit()):
            parser.error(f"bad resolution {res!r} (want WIDTHxHEIGHT)")
    if args.quick:
        resolutions = resolutions[:1]
    samples = args.samples or (12 if args.quick else 60)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    opts = replace(Options(), quick=args.quick, resolutions=resolutions, samples=samples,
                   out_dir=out)

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: could not become a child subreaper; leaked processes go unnoticed",
              file=sys.stderr)

    from benchmarks import report

    names = only or [n for n in MODULES if not (args.quick and n in FULL_ONLY)]
    mach = machine()
    results: list[Result] = []
    missing: list[str] = []
    started = time.monotonic()
    print(f"benchmarks ({'quick' if args.quick else 'full'}; {', '.join(resolutions)}; "
          f"{samples} samples) -> {out}", flush=True)
    print(f"machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, "
          f"load {' '.join(f'{x:.2f}' for x in mach['load_average'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vr-bench-run-") as tmp:
        for i, name in enumerate(names, 1):
            if not (ROOT / "benchmarks" / f"{name}.py").exists():
                missing.append(name)
                print(f"[{i}/{len(names)}] {name}: not available (no benchmarks/{name}.py)",
                      flush=True)
                continue
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
            result = run_module(name, opts, Path(tmp))
            results.append(result)
            status = f"FAILED: {result.error}" if result.error else f"{len(result.figures)} figures"
            print(f"[{i}/{len(names)}] {name}: {status} ({result.seconds:.0f} s, load "
                  f"{result.load_before[0] if result.load_before else 0:.2f} -> "
                  f"{result.load_after[0] if result.load_after else 0:.2f})", flush=True)
            # a partial report after every module: a crash later still leaves one
            report.write(out, results, mach, opts, missing, time.monotonic() - started)
    mach_after = dict(mach, load_average_after=os.getloadavg())
    paths = report.write(out, results, mach_after, opts, missing, time.monotonic() - started)
    print(f"\ntotal {time.monotonic() - started:.0f} s; wrote {', '.join(p.name for p in paths)} "
          f"to {out}", flush=True)
    failed = [r.benchmark for r in results if r.error]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
