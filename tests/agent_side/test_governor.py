"""The frame budget, the governor and the settle trigger, on invented clocks (no sleeps)."""

from __future__ import annotations

import pytest

from agent_side.capture import Rect
from agent_side.governor import FrameBudget, Governor, GovernorConfig, RateMeter
from agent_side.settle import SettleTracker

# -- FrameBudget --------------------------------------------------------------


def test_budget_allows_a_burst_then_paces_at_the_rate() -> None:
    budget = FrameBudget(60, burst=2, now=0.0)
    assert budget.next_at(0.0) == 0.0
    budget.spend(0.0)
    assert budget.next_at(0.0) == 0.0  # second frame of the burst
    budget.spend(0.0)
    assert budget.next_at(0.0) == pytest.approx(1 / 60)
    budget.spend(1 / 60)
    assert budget.next_at(1 / 60) == pytest.approx(2 / 60)


def test_budget_rate_change_keeps_earned_tokens() -> None:
    budget = FrameBudget(60, burst=1, now=0.0)
    budget.spend(0.0)
    budget.set_rate(10, 0.0)
    assert budget.next_at(0.0) == pytest.approx(0.1)
    budget.set_rate(60, 0.05)  # 0.5 token earned at 10/s
    assert budget.next_at(0.05) == pytest.approx(0.05 + 0.5 / 60)


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        FrameBudget(0)
    with pytest.raises(ValueError):
        FrameBudget(30, burst=0.5)


# -- Governor -----------------------------------------------------------------


def test_governor_runs_at_the_cap_when_frames_are_cheap() -> None:
    gov = Governor(GovernorConfig(cap_fps=60, cpu_budget=0.6))
    for _ in range(10):
        gov.frame_done(cpu_s=0.004, wall_s=0.005)
    assert gov.rate(1.0) == 60
    assert gov.reason == "cap"


def test_governor_holds_cpu_to_its_budget() -> None:
    gov = Governor(GovernorConfig(cap_fps=60, cpu_budget=0.5))
    for _ in range(50):
        gov.frame_done(cpu_s=0.020, wall_s=0.021)  # 20 ms CPU a frame: 25/s fit in 0.5 core
    assert gov.rate(1.0) == pytest.approx(25, rel=0.01)
    assert gov.reason == "cpu"


def test_governor_never_schedules_faster_than_a_frame_takes() -> None:
    gov = Governor(GovernorConfig(cap_fps=60, cpu_budget=2.0, headroom=0.85))
    for _ in range(50):
        gov.frame_done(cpu_s=0.010, wall_s=0.034)  # waiting on a busy machine, not CPU
    assert gov.rate(1.0) == pytest.approx(0.85 / 0.034, rel=0.01)
    assert gov.reason == "encode_time"


def test_governor_backs_off_for_a_slow_consumer_and_recovers() -> None:
    cfg = GovernorConfig(cap_fps=60, decrease=0.5, cut_interval_s=0.1, recover_s=0.5,
                         recover_step=0.1, backlog_frames=2)
    gov = Governor(cfg, now=0.0)
    gov.backlog(1, now=0.0)  # one queued frame is normal
    assert gov.rate(0.0) == 60
    gov.backlog(3, now=0.0)
    assert gov.rate(0.0) == 30 and gov.reason == "consumer"
    gov.backlog(3, now=0.05)  # within cut_interval_s: one cut per burst
    assert gov.rate(0.05) == 30
    gov.backlog(3, now=0.2)
    assert gov.rate(0.2) == 15
    assert gov.rate(0.69) == 15  # recovery starts recover_s after the last cut
    assert gov.rate(0.7) == pytest.approx(21)
    assert gov.rate(1.7) == pytest.approx(33)  # two more steps
    assert gov.rate(10.0) == 60 and gov.reason == "cap"


def test_governor_floor() -> None:
    gov = Governor(GovernorConfig(cap_fps=60, cpu_budget=0.1, floor_fps=5))
    gov.frame_done(cpu_s=1.0, wall_s=1.0)
    assert gov.rate(0.0) == 5
    for t in range(20):
        gov.backlog(10, now=t * 0.2)
    assert gov.rate(4.0) == 5


def test_governor_config_is_checked() -> None:
    with pytest.raises(ValueError):
        GovernorConfig(cap_fps=30, floor_fps=40)
    with pytest.raises(ValueError):
        GovernorConfig(decrease=1.0)


def test_rate_meter_counts_the_window() -> None:
    meter = RateMeter(window_s=1.0)
    for i in range(60):
        meter.add(i / 60)
    assert meter.rate(59 / 60) == 60
    assert meter.rate(1.5) == 29  # frames after 0.5 s remain (i = 31..59)
    assert meter.rate(3.0) == 0


# -- SettleTracker ------------------------------------------------------------


def test_settle_refines_after_motion_stops_then_goes_quiet() -> None:
    settle = SettleTracker(0.15, 1600, 900, passes=2)
    assert settle.due_at() is None  # nothing encoded lossy: nothing to refine
    for i in range(10):  # scrolling at 60 Hz
        now = i / 60
        settle.changed(now)
        settle.encoded_lossy(Rect(0, 100, 1600, 700), now)
        assert not settle.due(now)
    last = 9 / 60
    assert settle.due_at() == pytest.approx(last + 0.15)
    assert not settle.due(last + 0.149)
    assert settle.due(last + 0.15)
    # The first pass was held back (the VBV cap): a second one follows; the last pass ends it.
    assert settle.refined(last + 0.15, complete=False) == Rect(0, 100, 1600, 700)
    assert settle.due_at() == pytest.approx(last + 0.15 + 0.30)  # twice the delay
    assert settle.refined(last + 0.45, complete=False) == Rect(0, 100, 1600, 700)
    assert settle.due_at() is None and not settle.due(100.0)  # static: nothing more
    assert settle.refinements == 2


def test_settle_complete_pass_ends_the_series() -> None:
    settle = SettleTracker(0.1, 800, 600, passes=3)
    settle.changed(0.0)
    settle.encoded_lossy(Rect(0, 0, 64, 64), 0.0)
    assert settle.refined(0.1, complete=True) == Rect(0, 0, 64, 64)
    assert settle.due_at() is None


def test_settle_timer_restarts_on_every_change() -> None:
    settle = SettleTracker(0.2, 800, 600)
    settle.changed(0.0)
    settle.encoded_lossy(Rect(0, 0, 10, 10), 0.0)
    settle.changed(0.19)
    settle.encoded_lossy(Rect(100, 100, 10, 10), 0.19)
    assert not settle.due(0.25)
    assert settle.due(0.39)
    assert settle.refined(0.39, complete=True) == Rect(0, 0, 110, 110)  # the union of what was lossy


def test_settle_motion_between_passes_starts_over() -> None:
    settle = SettleTracker(0.1, 800, 600, passes=2)
    settle.changed(0.0)
    settle.encoded_lossy(Rect(0, 0, 10, 10), 0.0)
    settle.refined(0.1, complete=False)  # first pass; a second is due at 0.3
    settle.changed(0.15)
    settle.encoded_lossy(Rect(50, 50, 10, 10), 0.15)
    assert settle.due_at() == pytest.approx(0.25)
    settle.refined(0.25, complete=False)
    assert settle.dirty is not None  # two passes again after new motion
    assert settle.due_at() == pytest.approx(0.45)
    settle.refined(0.45, complete=False)
    assert settle.dirty is None


def test_settle_keyframe_on_a_still_screen_is_refined_after() -> None:
    settle = SettleTracker(0.1, 800, 600)
    settle.changed(1.0)
    assert settle.settled(1.1) and not settle.settled(1.05)
    settle.encoded_lossy(None, 5.0)  # a keyframe (a viewer joined, the recorder asked)
    assert settle.dirty == Rect(0, 0, 800, 600)
    assert settle.due_at() == pytest.approx(5.1)


def test_settle_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SettleTracker(0, 10, 10)
    with pytest.raises(ValueError):
        SettleTracker(0.1, 10, 10, passes=0)
