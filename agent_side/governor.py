"""The frame budget of a video source: how many frames a second it may encode.

Contract: every object here is pure bookkeeping driven by the caller's clock
(each method takes ``now``, seconds on a monotonic clock), owns no thread and
never sleeps, so unit tests replay any timeline without waiting.

* :class:`FrameBudget` — a token bucket: ``rate`` frames a second on average,
  up to ``burst`` back to back. A change is captured at once whenever the
  average allows it (a fixed 1/fps grid would make it wait for the next slot).
* :class:`Governor` — decides ``rate``: the configured cap (default 60/s),
  lowered when the capture→encode worker cannot keep up:

  - its own CPU: ``cpu_budget`` (a fraction of one core) divided by the
    recent CPU cost of one frame;
  - encode time: a frame must be done before the next one is due, so at most
    ``1 / wall time of one frame`` (with ``headroom``);
  - slow consumers: when every subscriber has ``backlog_frames`` or more
    frames queued (the fan-out reports the shallowest queue, so one slow viewer
    does not lower everyone's rate: it drops to its next keyframe instead), the
    rate is cut by ``decrease`` (at most once per ``cut_interval_s``); it
    recovers by ``recover_step`` of the cap every ``recover_s`` without backlog.

  :meth:`Governor.rate` never goes below ``floor_fps``; :attr:`Governor.reason`
  names the limit in force (``cap``, ``cpu``, ``encode_time``, ``consumer``).
* :class:`RateMeter` — frames actually produced over the last ``window_s``
  (the effective rate reported in stats and ``/metrics``).
"""

from __future__ import annotations

import collections
import dataclasses

__all__ = ["FrameBudget", "Governor", "GovernorConfig", "RateMeter"]


class FrameBudget:
    """The frame-rate limit as a token bucket (see the module docstring)."""

    def __init__(self, rate: float, burst: float = 2.0, *, now: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate!r}, {burst!r}")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float, now: float) -> None:
        """Change the average rate from *now* on (tokens earned so far are kept)."""
        self._refill(now)
        self._rate = max(rate, 1e-3)

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now

    def next_at(self, now: float) -> float:
        """The earliest time the next frame may be captured."""
        self._refill(now)
        return now if self._tokens >= 1 else now + (1 - self._tokens) / self._rate

    def spend(self, now: float) -> None:
        """One frame was captured (forced frames may overdraw, down to -1)."""
        self._refill(now)
        self._tokens = max(-1.0, self._tokens - 1)


@dataclasses.dataclass(frozen=True)
class GovernorConfig:
    """Tuning of the :class:`Governor`."""

    cap_fps: float = 60.0
    """The configured upper bound (``--fps``)."""
    cpu_budget: float = 0.6
    """CPU the capture→encode worker may use, as a fraction of one core."""
    floor_fps: float = 5.0
    """Never govern below this rate (a picture every 200 ms still follows the screen)."""
    headroom: float = 0.85
    """Fraction of the frame interval one frame's wall time may fill."""
    backlog_frames: int = 2
    """A subscriber this many frames behind counts as a slow consumer."""
    decrease: float = 0.7
    """Factor applied to the rate on a slow consumer."""
    cut_interval_s: float = 0.1
    """At most one cut per this interval (one backlog is reported once per frame)."""
    recover_s: float = 0.5
    """Without backlog for this long, the consumer factor grows by ``recover_step``."""
    recover_step: float = 0.1
    """Recovery per ``recover_s``, as a fraction of the cap."""
    smoothing: float = 0.2
    """Weight of the newest frame in the cost averages (EWMA)."""

    def __post_init__(self) -> None:
        if not 0 < self.floor_fps <= self.cap_fps:
            raise ValueError(f"need 0 < floor_fps <= cap_fps, got {self.floor_fps!r}, "
                             f"{self.cap_fps!r}")
        if not 0 < self.cpu_budget:
            raise ValueError(f"cpu_budget must be > 0, got {self.cpu_budget!r}")
        if not 0 < self.decrease < 1 or not 0 < self.smoothing <= 1:
            raise ValueError("decrease must be in (0, 1) and smoothing in (0, 1]")


class Governor:
    """Chooses the frame rate from what frames cost and how consumers keep up."""

    def __init__(self, config: GovernorConfig, *, now: float = 0.0) -> None:
        self.config = config
        self._cpu_s: float | None = None
        self._wall_s: float | None = None
        self._factor = 1.0
        self._last_cut = -1e9
        self._last_recover = now
        self.reason = "cap"
        """Which limit set the last :meth:`rate`: cap, cpu, encode_time or consumer."""

    def frame_done(self, cpu_s: float, wall_s: float) -> None:
        """One frame was captured, converted and encoded at this cost."""
        a = self.config.smoothing
        self._cpu_s = cpu_s if self._cpu_s is None else (1 - a) * self._cpu_s + a * cpu_s
        self._wall_s = wall_s if self._wall_s is None else (1 - a) * self._wall_s + a * wall_s

    def backlog(self, frames: int, now: float) -> None:
        """The fewest frames any subscriber had queued when the last frame arrived."""
        cfg = self.config
        if frames >= cfg.backlog_frames and now - self._last_cut >= cfg.cut_interval_s:
            self._factor = max(cfg.floor_fps / cfg.cap_fps, self._factor * cfg.decrease)
            self._last_cut = now
            self._last_recover = now

    def rate(self, now: float) -> float:
        """The frame rate allowed from *now* on."""
        cfg = self.config
        if self._factor < 1 and now - self._last_recover + 1e-9 >= cfg.recover_s:
            steps = int((now - self._last_recover) / cfg.recover_s + 1e-9)
            self._factor = min(1.0, self._factor + steps * cfg.recover_step)
            self._last_recover += steps * cfg.recover_s
        limits = {"cap": cfg.cap_fps}
        if self._cpu_s:
            limits["cpu"] = cfg.cpu_budget / self._cpu_s
        if self._wall_s:
            limits["encode_time"] = cfg.headroom / self._wall_s
        limits["consumer"] = cfg.cap_fps * self._factor
        self.reason = min(limits, key=lambda k: (limits[k], k != "cap"))
        return max(cfg.floor_fps, min(limits.values()))

    def snapshot(self) -> dict[str, float | str | None]:
        """Inputs of the last decision, for stats."""
        return {"reason": self.reason,
                "frame_cpu_ms": None if self._cpu_s is None else self._cpu_s * 1000,
                "frame_wall_ms": None if self._wall_s is None else self._wall_s * 1000,
                "consumer_factor": self._factor}


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def rate(self, now: float) -> float:
        """Events in the window ending at *now*, per second."""
        self._trim(now)
        return len(self._times) / self.window_s
