"""Event and session logs: bounded reads and bounded growth (issue 20, medium: "events
and logs grow without limit and are re-read whole by /logs, event resume and chapters").

Unit tests of the pieces, on real files:

* the NDJSON readers (:mod:`gateway.sessions.ndjson`) through a file wrapper that
  counts the bytes read: a resume near the end of a 26 MB log, its tail and a
  backwards scan read a few blocks, not the file; the bisection agrees with a
  plain scan on logs with long and damaged lines;
* :class:`~gateway.sessions.events.EventHub` on a 26 MB log: a new hub (a
  restarted gateway) continues the ids, and a resume returns the right events,
  with the process's own read counter (``/proc/self/io`` ``rchar``) and its
  peak allocation far below the file's size;
* a small cap: the log rotates, the files stay under it, an ``events_dropped``
  event names the first id kept and a resume from a dropped id starts there;
* :func:`~gateway.sessions.logs.cap_log`: a process log over its cap keeps its
  newest half in ``*.1.log`` and starts again with a marker line, and writers
  that append go on at the new end.

``tests/events/test_bounded_logs_gateway.py`` does the same through a real gateway.
"""

from __future__ import annotations

import io
import json
import os
import random
import tracemalloc
from pathlib import Path
from typing import Any

from gateway.sessions import logs as session_logs
from gateway.sessions.events import PAGE_EVENTS, EventHub
from gateway.sessions.ndjson import lines_backwards, read_lines, seek_after, tail_lines

BIG_EVENTS = 200_000
"""About 26 MB of events."""


class CountingFile(io.RawIOBase):
    """A real file whose reads are counted."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb", buffering=0)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        self.bytes_read += n or 0
        return n or 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def close(self) -> None:
        self._f.close()
        super().close()


def _event(i: int) -> dict[str, Any]:
    return {"id": i, "ts": f"2026-01-01T00:00:00.{i % 1000:03d}Z", "type": "action",
            "action": "left_click", "coordinate": [i % 1600, i % 900], "ok": True}


def _write_log(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for start in range(1, count + 1, 10_000):
            f.write("".join(json.dumps(_event(i)) + "\n"
                            for i in range(start, min(count + 1, start + 10_000))))


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_readers_read_blocks_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    _write_log(path, BIG_EVENTS)
    size = path.stat().st_size
    assert size > 25_000_000

    f = CountingFile(path)
    offset = seek_after(f, BIG_EVENTS - 10)
    lines = read_lines(f, offset, 100, 100 * 16 * 1024)
    assert [json.loads(line)["id"] for line in lines] == list(range(BIG_EVENTS - 9,
                                                                    BIG_EVENTS + 1))
    assert f.bytes_read < 500_000, f.bytes_read  # ~20 probes of 4 KiB, one 64 KiB block

    f.bytes_read = 0
    assert [json.loads(x)["id"] for x in tail_lines(f, 50, 50 * 2048)] == list(
        range(BIG_EVENTS - 49, BIG_EVENTS + 1))
    assert f.bytes_read <= 128 * 1024

    f.bytes_read = 0
    newest = [json.loads(x)["id"] for _, x in zip(range(30), lines_backwards(f, 1 << 30),
                                                   strict=False)]
    assert newest == list(range(BIG_EVENTS, BIG_EVENTS - 30, -1))
    assert f.bytes_read <= 64 * 1024
    f.close()


def test_bisection_agrees_with_a_scan(tmp_path: Path) -> None:
    rng = random.Random(20)
    for trial in range(40):
        path = tmp_path / f"log{trial}.ndjson"
        lines: list[bytes] = []
        for i in sorted(rng.sample(range(1, 2000), rng.randint(0, 80))):
            lines.append(json.dumps({"id": i, "pad": "x" * rng.choice([0, 50, 6000, 70_000])})
                         .encode())
            if rng.random() < 0.1:
                lines.append(b'{"id": broken')
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        with path.open("rb") as f:
            for after in [0, 2000, *rng.sample(range(2000), 15)]:
                expected, pos = len(path.read_bytes()), 0
                for line in lines:
                    try:
                        if json.loads(line)["id"] > after:
                            expected = pos
                            break
                    except ValueError:
                        pass
                    pos += len(line) + 1
                assert seek_after(f, after) == expected, (trial, after)


def test_event_hub_resumes_a_big_log_within_a_small_budget(tmp_path: Path) -> None:
    logs = tmp_path / "sid" / "logs"
    _write_log(logs / "events.ndjson", BIG_EVENTS)
    size = (logs / "events.ndjson").stat().st_size

    tracemalloc.start()
    before = _rchar()
    hub = EventHub(lambda sid: tmp_path / sid / "logs")  # default cap: no rotation here
    event = hub.emit("sid", "status", status="running")  # a restarted gateway goes on
    assert event["id"] == BIG_EVENTS + 1
    old = hub.history("sid", after=1234, limit=5)  # before the memory: from the file
    assert [e["id"] for e in old] == [1235, 1236, 1237, 1238, 1239]
    page = hub.history("sid", after=0)
    assert [e["id"] for e in page] == list(range(1, PAGE_EVENTS + 1))
    chapters = hub.last("sid", {"action"}, 20)
    assert [e["id"] for e in chapters] == list(range(BIG_EVENTS - 19, BIG_EVENTS + 1))
    read = _rchar() - before
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # A page of 1000 events is ~150 KB to parse; the file is 200 times that.
    assert read < 24 * 1024 * 1024 // 8, (read, size)
    assert peak < size // 8, (peak, size)


def test_small_cap_rotates_and_says_what_was_dropped(tmp_path: Path) -> None:
    cap = 200_000
    hub = EventHub(lambda sid: tmp_path / sid / "logs", max_bytes=cap)
    for i in range(6000):
        hub.emit("sid", "action", action="type", text=f"line {i}")
    logs = tmp_path / "sid" / "logs"
    current, older = logs / "events.ndjson", logs / "events.1.ndjson"
    assert older.exists()
    assert current.stat().st_size + older.stat().st_size <= cap + 1024
    dropped = hub.last("sid", {"events_dropped"}, 100)
    assert dropped, "no events_dropped event"
    first_kept = dropped[-1]["first_kept"]
    with older.open("rb") as f:
        assert json.loads(read_lines(f, 0, 1, 1 << 20)[0])["id"] == first_kept
    # A reader resuming from an id that was dropped starts at the first one kept.
    assert hub.history("sid", after=1, limit=3)[0]["id"] == first_kept
    # A new hub (a restarted gateway) continues the ids and the cap.
    again = EventHub(lambda sid: tmp_path / sid / "logs", max_bytes=cap)
    last_id = hub.last("sid", {"action", "events_dropped"}, 1)[0]["id"]
    assert again.emit("sid", "status", status="running")["id"] == last_id + 1


def test_process_log_is_cut_with_a_marker(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    writer = log.open("ab", buffering=0)  # as the runtime agent's stdout (O_APPEND)
    for i in range(30_000):
        writer.write(f"2026-01-01 00:00:00,000 INFO line {i:06d} {'y' * 60}\n".encode())
    size = log.stat().st_size
    assert session_logs.cap_log(log, 1_000_000)
    assert not session_logs.cap_log(log, 1_000_000)  # under the cap now
    kept = (tmp_path / "agent.1.log").read_text().splitlines()
    assert kept[-1].split()[4] == "029999"  # the newest half, whole lines
    assert 0 < len("\n".join(kept)) <= 500_000 < size
    writer.write(b"2026-01-01 00:00:01,000 INFO after the cut\n")
    writer.close()
    text = log.read_text()
    assert text.startswith("20") and "older lines are in agent.1.log" in text.splitlines()[0]
    assert text.splitlines()[1].endswith("after the cut")  # no hole: appended at the new end
    assert log.stat().st_size < 1000
