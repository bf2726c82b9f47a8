"""Viewer caps and the offer rate on an invented clock (the real-peer attacks are in
tests/security/test_viewer_caps.py)."""

from __future__ import annotations

import pytest

from agent_side.limits import ViewerAdmission, ViewerLimits, ViewerRefused


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_token_then_transport_then_session_caps() -> None:
    admission = ViewerAdmission(ViewerLimits(max_viewers=3, max_viewers_per_token=2, max_ws=2))
    a = admission.admit("ws", "a")
    admission.admit("webrtc", "a")
    with pytest.raises(ViewerRefused) as e:
        admission.admit("vnc", "a")
    assert (e.value.status, e.value.reason) == (429, "token_viewers")
    admission.admit("ws", "b")
    with pytest.raises(ViewerRefused) as e:
        admission.admit("ws", "c")
    assert (e.value.status, e.value.reason) == (503, "transport_viewers")
    with pytest.raises(ViewerRefused) as e:
        admission.admit("vnc", "c")
    assert (e.value.status, e.value.reason) == (503, "session_viewers")
    assert e.value.retry_after_s >= 1
    admission.release(a)
    admission.release(a)  # idempotent
    admission.admit("vnc", "c")
    assert admission.refused["token_viewers"] == 1
    assert admission.stats()["open"] == {"webrtc": 1, "ws": 1, "vnc": 1}


def test_offer_rate_per_token_and_session_with_retry_after() -> None:
    clock = Clock()
    admission = ViewerAdmission(ViewerLimits(offers_per_minute=3, session_offers_per_minute=5),
                                clock=clock)
    for _ in range(3):
        admission.check_offer("a")
        clock.now += 1
    with pytest.raises(ViewerRefused) as e:
        admission.check_offer("a")
    assert (e.value.status, e.value.reason) == (429, "token_offer_rate")
    assert e.value.retry_after_s == 57  # the first offer leaves the window at 1060
    admission.check_offer("b")
    admission.check_offer("c")
    with pytest.raises(ViewerRefused) as e:
        admission.check_offer("d")
    assert (e.value.status, e.value.reason) == (503, "session_offer_rate")
    clock.now += 60
    admission.check_offer("a")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ViewerLimits(max_viewers=-1)
    with pytest.raises(ValueError):
        ViewerLimits(datachannel_max_bytes=10)
    with pytest.raises(ValueError):
        ViewerLimits(ice_deadline_s=0)
