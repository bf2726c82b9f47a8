"""Where a session's start-up time goes: spans, kept as histograms for /metrics.

Each start (cold or claimed from the warm pool) yields spans in milliseconds from
three places: the gateway (``create`` -> ``running`` in ``total``, the backend's
``start_pod`` or the claim, the wait for the runtime agent's first frame), the
backend (``prepare``, ``spawn_app``, ``spawn_agent``) and the runtime agent
(``agent_imports``, ``x_wait``, ``first_capture``, ``serve``; a claim's
``claim_resize``, ``claim_browser``). The session's event log gets them as one
``startup`` event; :class:`StartupHistograms` aggregates them by span and by
``from_pool`` for Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BUCKETS_S", "StartupHistograms"]

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Upper bounds (seconds) of the histogram buckets."""


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))
    total: int = 0
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum_s += seconds


class StartupHistograms:
    """Histograms of start-up spans, labelled by span and by ``from_pool``."""

    def __init__(self) -> None:
        self._hists: dict[tuple[str, bool], _Histogram] = {}

    def observe(self, spans_ms: dict[str, float], from_pool: bool) -> None:
        for name, ms in spans_ms.items():
            self._hists.setdefault((name, from_pool), _Histogram()).observe(ms / 1000)

    def prometheus(self, name: str) -> list[str]:
        """Exposition-format lines of one histogram family *name* (seconds)."""
        lines = [f"# HELP {name} Session start-up spans (create -> running in 'total').",
                 f"# TYPE {name} histogram"]
        for (span, pooled), h in sorted(self._hists.items()):
            labels = f'span="{span}",from_pool="{str(pooled).lower()}"'
            for bound, count in zip(BUCKETS_S, h.counts, strict=True):
                lines.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {count}')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {h.total}')
            lines.append(f"{name}_sum{{{labels}}} {h.sum_s:.6f}")
            lines.append(f"{name}_count{{{labels}}} {h.total}")
        return lines
