"""The contract between ``python -m benchmarks`` and each benchmark module.

Every benchmark module that the runner knows exposes::

    def run(opts: Options) -> Result

It does its own set-up and clean-up (gateway, Xvfb, Chromium, x11vnc), puts
the same-run baseline next to each of its figures, and must honour
``opts.quick`` (the whole quick suite stays under 3 minutes). The runner turns
the results into ``benchmarks/results/`` (Markdown, JSON, PNG plots).

The runner (``python -m benchmarks``) calls each module in a fresh
subprocess (``MODULES`` in ``benchmarks/__main__.py``), fills in
``Result.seconds``, ``load_before``/``load_after`` and, for a module that
raised, ``error``; it reaps and reports any process a module left behind.

Plot conventions (``benchmarks/report.py``):

* ``series["latency_ms"]``: ``{label: [samples in ms]}`` -> latency
  distribution (one box per label; labels like ``"scroll 1600x900 webrtc"``
  are grouped by their first word, the workload);
* ``series["cpu_vs_viewers"]``: ``{label: [[viewers, cpu_pct], ...]}`` -> CPU
  against viewer count.

Quick-mode budget (the whole suite < 3 min on the 2-core CI box):
viewer_latency ~70 s, glass_to_glass ~30 s, every other module <= 20 s.

Extensions since the first version (all with defaults): ``Result.load_before``,
``Result.load_after``, ``Result.error`` (filled by the runner),
``Result.from_json``; ``Figure.note``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Options:
    quick: bool = False
    """Fewer samples and shorter runs: checks that everything works, in minutes."""
    resolutions: tuple[str, ...] = ("1600x900", "1920x1080")
    """Session sizes the latency workloads run at (quick mode: the first only)."""
    samples: int = 60
    """Latency samples per scenario after warm-up (quick mode: about 15)."""
    out_dir: Path = Path("benchmarks/results")
    """Where the runner writes; a module may put raw files of its own here."""


@dataclass(frozen=True)
class Figure:
    """One measured figure, with its same-run baseline when it has one."""

    name: str
    """What was measured, e.g. ``"glass-to-glass p50, scroll, WebRTC (Chromium), 1600x900"``."""
    value: float | None
    unit: str
    """``"ms"``, ``"% of a core"``, ``"kB/s"``, ``"dB"``, ``"s"``, ``"sessions"``..."""
    baseline: float | None = None
    baseline_name: str | None = None
    """e.g. ``"x11vnc + noVNC (tuned)"``."""
    lower_is_better: bool = True
    target: str | None = None
    """The target from the issue, as text, e.g. ``"<= 0.7x baseline"``."""
    note: str | None = None
    """Short qualifier shown in the table (method, n, ...)."""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


@dataclass
class Result:
    benchmark: str
    """Module name, e.g. ``"viewer_latency"``."""
    title: str
    figures: list[Figure] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    """Raw data (JSON-able) for the plots: per-sample latencies, CPU per viewer count..."""
    notes: list[str] = field(default_factory=list)
    """Method notes and anything odd seen during the run."""
    seconds: float = 0.0
    """Wall time the module took (the runner fills it in)."""
    load_before: tuple[float, float, float] | None = None
    """1/5/15-minute load average when the module started (the runner fills it in)."""
    load_after: tuple[float, float, float] | None = None
    """Load average when it ended (the runner fills it in)."""
    error: str | None = None
    """Why the module failed (the runner fills it in; figures are then empty)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        """The inverse of :meth:`to_json` (unknown keys are ignored)."""
        known = set(Figure.__dataclass_fields__)
        figures = [Figure(**{k: v for k, v in f.items() if k in known}) for f in data["figures"]]
        load_before, load_after = data.get("load_before"), data.get("load_after")
        return cls(benchmark=data["benchmark"], title=data["title"], figures=figures,
                   series=data.get("series", {}), notes=list(data.get("notes", [])),
                   seconds=data.get("seconds", 0.0),
                   load_before=tuple(load_before) if load_before else None,  # type: ignore[arg-type]
                   load_after=tuple(load_after) if load_after else None,  # type: ignore[arg-type]
                   error=data.get("error"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for fig, out in zip(self.figures, data["figures"], strict=True):
            out["ratio"] = fig.ratio
        return data


def machine() -> dict[str, Any]:
    """The machine, as the results describe it."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
