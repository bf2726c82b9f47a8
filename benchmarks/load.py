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
   nothing of it is left;
8. before that last snapshot, the hostile-viewer phase (``hostile_attack_s`` > 0):
   one more session, watched by an honest viewer while one view token does
   everything it may (:mod:`benchmarks.load_hostile`); its resources count in
   the leak check too.

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
import contextlib
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.leaks import (  # noqa: E402
    GLOBAL_CATEGORIES,
    Snapshot,
    UdpDrops,
    cpu_ticks,
    fd_kinds,
    leaks,
    machine_ticks,
    pods_memory_mb,
    rss_mb,
    slot_holders,
    take_snapshot,
)
from benchmarks.load_agent import Recorder, agent_loop, follow_events, open_page, resolution_of  # noqa: E402
from benchmarks.load_hostile import ANIM_PAGE_URL, HostileRun, measure  # noqa: E402
from benchmarks.load_report import ErrorRecord, LoadReport, SessionRun, print_summary, write_json  # noqa: E402
from benchmarks.load_viewer import Viewer, count_at, frame_stats, parse_encoded, stall_seconds  # noqa: E402
from benchmarks.suite import Figure, Options, Result, machine  # noqa: E402
from visual_runtime_client.client import (  # noqa: E402
    ClientError,
    RemoteSession,
    VisualRuntimeClient,
)

logger = logging.getLogger(__name__)


TOKEN = "load-test-token-0123456789abcdef"
TERMINAL = {"stopped", "expired", "failed"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    hostile_baseline_s: float = 8.0
    """Hostile-viewer phase (:mod:`benchmarks.load_hostile`), after the load: each of the
    honest viewer's windows alone (before and after the attack)."""
    hostile_attack_s: float = 15.0
    """... and its window while one view token attacks (0: no hostile phase)."""


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
             str(state_dir), "--token", TOKEN, "--max-sessions", str(max(1, opts.sessions)),
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
                agent_loop(s, run, rec, random.Random(opts.seed + i), *resolution_of(s), until,
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
            run.encoded_in_window = count_at(series, end + 1.5) - count_at(series, start)
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


async def _hostile(client: VisualRuntimeClient, http: aiohttp.ClientSession, base_url: str,
                   opts: LoadOptions, rec: Recorder, sids: set[str],
                   learn_slots: Callable[[], None]) -> HostileRun | None:
    """One fresh session showing the 60 Hz page, watched honestly, then attacked."""
    sessions, runs = await create_sessions(client, 1, opts, rec)
    sids.update(r.session_id for r in runs)
    learn_slots()
    try:
        if not sessions or sessions[0].status != "running":
            return None
        if not await open_page(sessions[0], rec, url=ANIM_PAGE_URL):
            return None
        sid = sessions[0].session_id
        return await measure(client, http, base_url, sessions[0], opts.hostile_baseline_s,
                             opts.hostile_attack_s, opts.runtime_dir / sid / "run" / "agent.sock",
                             opts.viewer_rcvbuf_mb)
    finally:
        await _stop_sessions(client, sessions, runs, rec)


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
            if opts.hostile_attack_s > 0:
                hostile = await _hostile(client, http, gw.base_url, opts, rec, sids, learn_slots)
                report.hostile = hostile.to_json() if hostile is not None else None
                phases.mark("hostile")
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
    if report.hostile is not None:
        h = report.hostile
        result.figures += [
            Figure("honest viewer frames/s while a view token attacks (60 Hz page)",
                   h["attacked"]["viewer_fps"], "fps", h["baseline_fps"],
                   "no attacker, same session, before/after", lower_is_better=False,
                   target=">= 0.8x baseline"),
            Figure("runtime agent memory (cgroup), peak while a view token attacks",
                   h["attacked"]["agent_cgroup_mb_max"], "MB",
                   h["baseline"]["agent_cgroup_mb_max"], "no attacker, same session",
                   target=f"< {h['agent_limit_mb']} MB (its cgroup limit)"),
        ]
        for line in _hostile_lines(h):
            print(line)
            result.notes.append(line)
    else:
        result.notes.append("the hostile-viewer phase did not run (see load.json errors)")
    result.series = {"samples": report.samples,
                     "latencies_ms": {r.session_id: r.latencies_ms for r in report.sessions}}
    result.notes.append(f"leaks: {report.leaks or 'none'}; errors by status: "
                        f"{s['errors_by_status']}")
    return result


def _hostile_lines(hostile: dict[str, Any] | None) -> list[str]:
    if hostile is None:
        return ["hostile view token: not run"]
    b, a, c = hostile["baseline"], hostile["attacked"], hostile["after"]
    return [
        f"hostile view token: honest viewer {hostile['baseline_fps']} fps alone (before "
        f"{b['viewer_fps']}, after {c['viewer_fps']}) -> {a['viewer_fps']} fps attacked, "
        f"ratio {hostile['fps_ratio']} (target >= 0.8); encoder {b['encoded_fps']} -> "
        f"{a['encoded_fps']} -> {c['encoded_fps']} fps; machine CPU {b['machine_cpu_pct']} -> "
        f"{a['machine_cpu_pct']} -> {c['machine_cpu_pct']} %, attacker process "
        f"{hostile['attacker'].get('cpu_pct')} % of a core",
        f"  runtime agent memory (cgroup) peak {hostile['peak_mb']} MB of its "
        f"{hostile['agent_limit_mb']} MB limit ({b['agent_cgroup_mb_max']} MB alone, "
        f"{a['agent_cgroup_mb_max']} MB attacked); agent RSS max {b['agent_rss_mb_max']} -> "
        f"{a['agent_rss_mb_max']} MB, VmHWM {hostile['agent_hwm_mb']} MB; "
        f"OOM kills {hostile['oom_kills']}; agent CPU {b['agent_cpu_pct']} -> "
        f"{a['agent_cpu_pct']} %",
        f"  frame rate limited by (samples) {b['governor']} -> {a['governor']}; keyframes "
        f"{b['keyframes']} -> {a['keyframes']}; honest peer: REMB {b['honest_remb']} -> "
        f"{a['honest_remb']} bit/s, frames paced out {b['honest_paced_out']} -> "
        f"{a['honest_paced_out']}, RTP lost {b['honest_rtp_lost']} -> {a['honest_rtp_lost']}",
        f"  attacker: {hostile['attacker'].get('status')} {hostile['attacker'].get('notes')}",
        *(f"  error: {e}" for e in hostile["errors"]),
    ]


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
    for line in _hostile_lines(report.hostile):
        print(line)
    write_json(report, args.out)
    print(f"wrote {args.out}")
    s = report.summary()
    ok = not s["errors"] and not s["leaks_total"] and not s["viewers_starved"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
