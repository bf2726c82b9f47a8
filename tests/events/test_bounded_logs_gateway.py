"""Bounded event and process logs through a real gateway (issue 20, medium).

A running session (local backend) on a gateway with 1 MiB caps
(``event_log_max_mb``, ``session_log_max_mb``) gets ~1.6 MB of events: the
event log rotates and stays under its cap, an ``events_dropped`` event names the
first id kept, and the SSE stream resumes with ``Last-Event-ID`` near the end,
in the rotated file and before the first kept id, each time with the right
events. ``/logs?limit=`` gives the newest entries only (bad limits: 422). The
app's log, grown past its cap by an appending writer, is cut by the gateway
with a marker line that ``/logs`` shows. The unit tests beside this one
(``test_bounded_logs.py``) measure the bytes read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024


@pytest.fixture
async def capped_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), event_log_max_mb=1,
                                       session_log_max_mb=1):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


async def _resume(gw: Gateway, sid: str, last_id: int, count: int) -> list[dict[str, Any]]:
    """The first *count* events the SSE stream sends after *last_id*."""
    events: list[dict[str, Any]] = []
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/events"),
                           headers={**gw.auth, "Last-Event-ID": str(last_id)}) as resp:
        assert resp.status == 200
        current: dict[str, Any] = {}
        while len(events) < count:
            line = (await asyncio.wait_for(resp.content.readline(), 20)).decode().rstrip("\n")
            if line.startswith("id: "):
                current = {"id": int(line[4:])}
            elif line.startswith("data: ") and current:
                current.update(json.loads(line[6:]))
                events.append(current)
                current = {}
    return events


async def _logs(gw: Gateway, sid: str, limit: str) -> tuple[int, str]:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/logs?limit={limit}"),
                           headers=gw.auth) as resp:
        return resp.status, await resp.text()


async def test_event_log_is_capped_and_resumes_read_the_right_events(
        capped_gateway: Gateway) -> None:
    gw = capped_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    hub = gw.extra["app"][MANAGER].events
    last = 0
    for i in range(12_000):
        last = hub.emit(sid, "action", action="type", text=f"text {i:05d}", ok=True)["id"]
    logs_dir = gw.state_dir / "sessions" / sid / "logs"
    sizes = [(logs_dir / name).stat().st_size for name in ("events.ndjson", "events.1.ndjson")]
    assert sum(sizes) <= MIB + 4096, sizes
    dropped = hub.last(sid, {"events_dropped"}, 10)
    assert dropped, "the cap dropped events without saying so"
    first_kept = dropped[-1]["first_kept"]
    assert first_kept > 1000

    # Near the end (in memory), in the rotated file, and from before the first kept id.
    near_end = await _resume(gw, sid, last - 3, 3)
    assert [(e["id"], e["text"]) for e in near_end] == [
        (last - 2, "text 11997"), (last - 1, "text 11998"), (last, "text 11999")]
    older = await _resume(gw, sid, first_kept + 10, 5)
    assert [e["id"] for e in older] == list(range(first_kept + 11, first_kept + 16))
    assert all(e["type"] in ("action", "events_dropped") for e in older)
    gone = await _resume(gw, sid, 5, 2)
    assert [e["id"] for e in gone] == [first_kept, first_kept + 1]

    # /logs: the newest entries only, and a clear 422 for a bad limit.
    status, body = await _logs(gw, sid, "50")
    assert status == 200
    entries = [json.loads(line) for line in body.splitlines()]
    assert len(entries) == 50
    assert last in [e.get("id") for e in entries]
    for bad in ("0", "abc", "1000001"):
        status, body = await _logs(gw, sid, bad)
        assert status == 422 and json.loads(body)["errors"][0]["field"] == "limit", body

    # The app's log, appended past its cap, is cut by the gateway with a marker.
    app_log = logs_dir / "app.log"
    line = b"2026-01-01 00:00:00,000 filler " + b"z" * 90 + b"\n"
    with app_log.open("ab") as f:  # another appending writer, as the app sandbox's stdout
        f.write(line * (2 * MIB // len(line)))
    deadline = time.monotonic() + 60
    while app_log.stat().st_size > MIB:
        assert time.monotonic() < deadline, "the gateway never cut app.log"
        await asyncio.sleep(0.5)
    assert (logs_dir / "app.1.log").stat().st_size <= MIB // 2
    status, body = await _logs(gw, sid, "10000")
    markers = [json.loads(x) for x in body.splitlines() if "older lines are in app.1.log" in x]
    assert status == 200 and markers and markers[0]["source"] == "app"
    await gw.stop(sid)
