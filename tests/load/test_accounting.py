"""The load driver's own arithmetic: leak diff, starvation, /metrics parsing (no sessions)."""

from __future__ import annotations

from benchmarks.leaks import Snapshot, leaks
from benchmarks.load_viewer import frame_stats, parse_encoded, stall_seconds


def snap(**resources: list[str]) -> Snapshot:
    return Snapshot("t", {k: list(v) for k, v in resources.items()})


def test_leaks_shared_categories_compare_as_multisets() -> None:
    before = snap(gateway_fds=["socket", "socket", "pipe"], iptables=["-N VR-INPUT"],
                  cgroups=[])
    same = snap(gateway_fds=["pipe", "socket", "socket"], iptables=["-N VR-INPUT"], cgroups=[])
    assert leaks(before, same) == {}
    grown = snap(gateway_fds=["socket", "socket", "socket", "pipe", "/state/x.log"],
                 iptables=[], cgroups=[])
    assert leaks(before, grown) == {"gateway_fds": ["/state/x.log", "socket"]}


def test_leaks_own_categories_must_be_empty() -> None:
    before = snap(cgroups=[], netns=[])
    after = snap(cgroups=["abc.app"], netns=[])
    assert leaks(before, after) == {"cgroups": ["abc.app"]}


def test_stall_counts_only_gaps_while_frames_were_encoded() -> None:
    start, end = 100.0, 130.0
    frames = [101.0, 102.0, 110.0, 111.0, 129.0]
    # the encoder is idle from 102 to 110 (still screen), busy from 111 to 129
    encoded = [(float(t), n) for t, n in
               [(100, 0), (101, 1), (102, 2), (106, 2), (110, 3), (111, 4), (115, 20),
                (120, 40), (125, 60), (129, 70), (131, 71)]]
    assert frame_stats(frames, start, end) == (5, 18.0)
    assert stall_seconds(frames, encoded, start, end) == 18.0
    idle = [(t, 4 if t >= 111 else n) for t, n in encoded]
    assert stall_seconds(frames, idle, start, end) == 0.0


def test_stall_when_a_viewer_gets_nothing() -> None:
    encoded = [(float(t), t * 5) for t in range(0, 12)]
    assert stall_seconds([], encoded, 0.0, 10.0) == 10.0


def test_parse_encoded() -> None:
    text = ("# TYPE visual_runtime_frames_encoded_total counter\n"
            'visual_runtime_frames_encoded_total{session="a-b_c"} 42\n'
            'visual_runtime_frames_encoded_total{session="x"} 1e+06\n'
            'visual_runtime_encoded_bytes_total{session="x"} 7\n')
    assert parse_encoded(text) == {"a-b_c": 42, "x": 1_000_000}
