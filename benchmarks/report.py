"""The suite's report: ``latest.md``, ``latest.json`` and PNG plots.

``write(out, results, machine, opts, missing, seconds)`` is called by the
runner after every module (so a later crash still leaves a report). Plots
(matplotlib, Agg backend) follow the conventions in ``benchmarks/suite.py``:

* ``latency.png`` — from every ``series["latency_ms"]``: one panel per
  workload (the label's first word), a box per transport/receiver;
* ``cpu_vs_viewers.png`` — from every ``series["cpu_vs_viewers"]``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.suite import Figure, Options, Result

__all__ = ["figure_table", "target_met", "write"]

_TARGET = re.compile(r"^\s*(<=|>=|<|>|=)?\s*([0-9.]+)\s*(x\b|x baseline)?", re.I)
_TARGET_BASELINE = re.compile(r"^\s*(<=|>=|<|>|=)?\s*baseline\s*(?:([+-])\s*([0-9.]+))?", re.I)


def _compare(op: str | None, value: float, limit: float, lower_is_better: bool) -> bool:
    op = op or ("<=" if lower_is_better else ">=")
    return {"<=": value <= limit, ">=": value >= limit, "<": value < limit,
            ">": value > limit, "=": value == limit}[op]


def target_met(fig: Figure) -> bool | None:
    """Whether *fig* meets its target text: ``"<= 0.7x baseline"``, ``"<= 25 ms"``,
    ``">= 30"``, ``"<= baseline + 5 points"``, ``"0"`` (a bare number: at most / at least,
    as the figure's direction says)."""
    if fig.target is None or fig.value is None:
        return None
    m = _TARGET_BASELINE.match(fig.target)
    if m is not None:
        if fig.baseline is None:
            return None
        offset = float(m.group(3) or 0) * (-1 if m.group(2) == "-" else 1)
        return _compare(m.group(1), fig.value, fig.baseline + offset, fig.lower_is_better)
    m = _TARGET.match(fig.target)
    if m is None:
        return None
    value = fig.ratio if m.group(3) else fig.value
    if value is None:
        return None
    return _compare(m.group(1), value, float(m.group(2)), fig.lower_is_better)


def _num(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "–"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f}"


def _load(load: tuple[float, float, float] | list[float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in load) if load else "–"


def figure_table(figures: list[Figure]) -> list[str]:
    """Markdown rows: figure, value, unit, baseline, ratio, target, met?"""
    lines = ["| figure | value | unit | baseline | ratio | target | met? |",
             "|---|---:|---|---:|---:|---|---|"]
    for f in figures:
        met = target_met(f)
        base = "–" if f.baseline is None else \
            f"{_num(f.baseline)} ({f.baseline_name})" if f.baseline_name else _num(f.baseline)
        name = f.name + ("" if f.lower_is_better else " ↑") + (f" — {f.note}" if f.note else "")
        lines.append(
            f"| {name} | {_num(f.value)} | {f.unit} | {base} | "
            f"{_num(f.ratio, 2) + 'x' if f.ratio is not None else '–'} | {f.target or ''} | "
            f"{'' if met is None else 'yes' if met else '**no**'} |")
    return lines


def markdown(results: list[Result], mach: dict[str, Any], opts: Options, missing: list[str],
             seconds: float, plots: list[Path], generated: str) -> str:
    lines = [
        f"# Benchmark results ({'quick' if opts.quick else 'full'} run)",
        "",
        f"Generated {generated[:16].replace('T', ' ')} UTC by "
        f"`python -m benchmarks{' --quick' if opts.quick else ''}` in {seconds:.0f} s; "
        f"resolutions {', '.join(opts.resolutions)}; {opts.samples} latency samples per "
        "scenario after warm-up.",
        "",
        f"**Machine:** {mach.get('cpu')}, {mach.get('cores')} cores, {mach.get('memory_gib')} GiB, "
        f"Linux {mach.get('kernel')}, Python {mach.get('python')}. Load average (1/5/15 min) "
        f"at the start {_load(mach.get('load_average'))}"
        + (f", at the end {_load(mach.get('load_average_after'))}"
           if mach.get("load_average_after") else "") + "."
        + (f" Note: {mach['note']}." if mach.get("note") else ""),
        "",
        "Ratios are value / same-run baseline (lower is better unless marked ↑). "
        "`met?` compares with the issue's target.",
        "",
        "| benchmark | status | time | load before → after (1 min) |",
        "|---|---|---|---|",
    ]
    for r in results:
        status = f"**failed**: {r.error}" if r.error else f"ok, {len(r.figures)} figures"
        lines.append(f"| {r.benchmark} | {status} | {r.seconds:.0f} s | "
                     f"{_num(r.load_before[0] if r.load_before else None, 2)} → "
                     f"{_num(r.load_after[0] if r.load_after else None, 2)} |")
    for name in missing:
        lines.append(f"| {name} | not available | – | – |")
    targeted = [f for r in results for f in r.figures if f.target]
    if targeted:
        lines += ["", "## Against the targets", ""] + figure_table(targeted)
    for r in results:
        lines += ["", f"## {r.title} (`{r.benchmark}`)", ""]
        if r.error:
            lines += [f"Failed: {r.error}", ""]
        if r.figures:
            lines += figure_table(r.figures)
        if r.notes:
            lines += [""] + [f"- {n}" for n in r.notes]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _latency_plot(results: list[Result], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for label, samples in (r.series.get("latency_ms") or {}).items():
            if samples:
                workload, _, rest = label.partition(" ")
                groups.setdefault(workload, {})[rest or r.benchmark] = samples
    if not groups:
        return False
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 2.2 + 0.45 * max(
        len(g) for g in groups.values()) * len(groups)), squeeze=False)
    for ax, (workload, series) in zip(axes[:, 0], groups.items(), strict=True):
        labels = list(series)
        ax.boxplot([series[k] for k in labels], orientation="horizontal", whis=(5, 95),
                   showfliers=False, tick_labels=labels)
        ax.set_title(f"{workload}: glass-to-glass latency (whiskers p5-p95)", fontsize=10)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _cpu_plot(results: list[Result], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[list[float]]] = {}
    for r in results:
        series.update({k: v for k, v in (r.series.get("cpu_vs_viewers") or {}).items() if v})
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in series.items():
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("viewers")
    ax.set_ylabel("CPU, % of one core")
    ax.set_title("CPU against viewer count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write(out: Path, results: list[Result], mach: dict[str, Any], opts: Options,
          missing: list[str], seconds: float, generated: str | None = None) -> list[Path]:
    """Writes the report into *out*; returns the files written. *generated*: the run's
    time (ISO, UTC) when re-rendering an earlier run."""
    generated = generated or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    plots, problems = [], []
    for name, make in (("latency.png", _latency_plot), ("cpu_vs_viewers.png", _cpu_plot)):
        path = out / name
        try:
            if make(results, path):
                plots.append(path)
        except Exception as e:  # noqa: BLE001 - a broken plot must not lose the tables
            problems.append(f"plot {name} failed: {type(e).__name__}: {e}")
            print(problems[-1], file=sys.stderr)
    md = out / "latest.md"
    text = markdown(results, mach, opts, missing, seconds, plots, generated)
    md.write_text(text + "".join(f"\n- {p}" for p in problems))
    js = out / "latest.json"
    js.write_text(json.dumps({
        "generated": generated,
        "mode": "quick" if opts.quick else "full",
        "resolutions": list(opts.resolutions), "samples": opts.samples,
        "seconds": seconds, "machine": mach, "missing": missing,
        "results": [r.to_json() for r in results],
    }, indent=1, default=str))
    return [md, js, *plots]


def main() -> None:
    """``python -m benchmarks.report [DIR]``: re-renders DIR/latest.md and the plots from
    DIR/latest.json (after a change to the report's format), without measuring again."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("dir", nargs="?", type=Path,
                        default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    data = json.loads((args.dir / "latest.json").read_text())
    opts = Options(quick=data["mode"] == "quick", resolutions=tuple(data["resolutions"]),
                   samples=data["samples"], out_dir=args.dir)
    results = [Result.from_json(r) for r in data["results"]]
    for path in write(args.dir, results, data["machine"], opts, data.get("missing", []),
                      data["seconds"], generated=data.get("generated")):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
