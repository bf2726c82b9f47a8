"""Retention decisions (pure): age first, then the quota, oldest ended first; live never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.media.retention import RecordingEntry, plan

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _entry(sid: str, mb: int, ended_hours_ago: float | None) -> RecordingEntry:
    ended = None if ended_hours_ago is None else NOW - timedelta(hours=ended_hours_ago)
    return RecordingEntry(session_id=sid, size=mb * 1_000_000, ended_at=ended)


def test_max_age_deletes_only_old_ended_recordings() -> None:
    entries = [_entry("old", 10, 30), _entry("new", 10, 1), _entry("live", 10, None)]
    assert plan(entries, NOW, timedelta(hours=24), None) == [("old", "max_age")]


def test_quota_deletes_oldest_ended_first_until_under() -> None:
    entries = [_entry("a", 40, 5), _entry("b", 40, 3), _entry("c", 40, 1),
               _entry("live", 40, None)]
    # 160 MB held, quota 100 MB: drop a (oldest) then b; c and the live one stay.
    assert plan(entries, NOW, None, 100_000_000) == [("a", "quota"), ("b", "quota")]


def test_live_recordings_are_never_deleted_even_over_quota() -> None:
    entries = [_entry("live1", 80, None), _entry("live2", 80, None)]
    assert plan(entries, NOW, timedelta(seconds=1), 10) == []


def test_age_and_quota_together_count_each_once() -> None:
    entries = [_entry("old", 50, 48), _entry("mid", 50, 10), _entry("new", 50, 1)]
    assert plan(entries, NOW, timedelta(hours=24), 60_000_000) == [
        ("old", "max_age"), ("mid", "quota")]
