"""What a load run records and how it is reported: per-session records, the report
with its summary, the printed summary and the JSON file.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.leaks import Snapshot

logger = logging.getLogger(__name__)





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
    hostile: dict[str, Any] | None = None
    """The hostile-viewer phase (:class:`benchmarks.load_hostile.HostileRun`), if it ran."""

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
