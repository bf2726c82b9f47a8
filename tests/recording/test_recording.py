"""Recording on the real parts: a light gateway (Xvfb + xterm), real ffmpeg/ffprobe."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from gateway.appkeys import MANAGER
from gateway.media.recordings import RECORDINGS, RecordingService
from tests.gateway_fixtures import Gateway, in_process_gateway
from tests.recording.helpers import (
    events_of,
    ffmpeg_decode_errors,
    ffprobe,
    top_level_boxes,
    type_for,
    wait_event,
    wait_file,
)


@pytest.fixture
async def rec_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",)):
        yield gw


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def rec_path(gw: Gateway, sid: str) -> Path:
    return gw.state_dir / "sessions" / sid / "recording" / "recording.mp4"


@pytest.mark.timeout(120)
async def test_recorded_session_duration_range_chapters(rec_gateway: Gateway) -> None:
    gw = rec_gateway
    session = await gw.create_running(resolution="800x600")
    sid = session["session_id"]
    url = gw.url(f"/api/visual-sessions/{sid}/recording")
    await type_for(gw, sid, 3.0)

    # While running: what is recorded so far, for a view token too.
    await wait_file(rec_path(gw, sid), lambda d: b"moof" in d)
    view = {"Authorization": f"Bearer {session['tokens']['view']}"}
    async with gw.http.get(url, headers=view) as resp:
        assert resp.status == 200
        assert resp.content_type == "video/mp4"
        assert resp.headers["Accept-Ranges"] == "bytes"
        live = await resp.read()
    assert top_level_boxes(live)[:2] == ["ftyp", "moov"]
    await wait_event(gw, sid, "recording", status="started")

    await asyncio.sleep(2.0)  # a static stretch: the duration must still follow the wall clock
    stopped = await gw.stop(sid)
    assert stopped["status"] == "stopped"
    finalised = await wait_event(gw, sid, "recording", status="finalised")
    assert [e["status"] for e in await events_of(gw, sid, "recording")] == [
        "started", "stopped", "finalised"]

    path = rec_path(gw, sid)
    info = ffprobe(path)
    stream = info["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 800, 600)
    # The session's wall-clock length: running -> stop requested.
    status = {e["status"]: _ts(e["ts"]) for e in await events_of(gw, sid, "status")}
    wall = (status["stopping"] - status["running"]).total_seconds()
    duration = float(info["format"]["duration"])
    assert abs(duration - wall) <= 1.0, (duration, wall)
    assert finalised["duration_s"] == pytest.approx(duration, abs=0.01)
    full = path.read_bytes()
    boxes = top_level_boxes(full)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart
    assert ffmpeg_decode_errors(path) == (0, "")

    # After the end: the API token still reads it; Range requests are exact.
    size = len(full)
    async with gw.http.get(url, headers=gw.auth) as resp:
        assert resp.status == 200 and await resp.read() == full
    async with gw.http.get(url, headers={**gw.auth, "Range": "bytes=100-1099"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 100-1099/{size}"
        assert await resp.read() == full[100:1100]
    async with gw.http.get(url, headers={**gw.auth, "Range": "bytes=-500"}) as resp:
        assert resp.status == 206
        assert await resp.read() == full[-500:]
    async with gw.http.get(url, headers={**gw.auth, "Range": f"bytes={size - 10}-"}) as resp:
        assert resp.status == 206 and await resp.read() == full[-10:]
    async with gw.http.get(url, headers={**gw.auth, "Range": f"bytes={size}-"}) as resp:
        assert resp.status == 416
        assert resp.content_type == "application/problem+json"
        assert resp.headers["Content-Range"] == f"bytes */{size}"

    # Chapters: the typing actions, in order, inside the recording.
    async with gw.http.get(url + "/chapters", headers=gw.auth) as resp:
        assert resp.status == 200 and resp.content_type == "text/vtt"
        vtt = await resp.text()
    assert vtt.startswith("WEBVTT") and "action: type" in vtt and "action: key" in vtt
    async with gw.http.get(url + "/chapters?format=json", headers=gw.auth) as resp:
        chapters = (await resp.json())["chapters"]
    assert chapters and all(0 <= c["start"] < c["end"] <= duration + 0.5 for c in chapters)
    assert (path.parent / "chapters.vtt").read_text() == vtt


@pytest.mark.timeout(120)
async def test_sigkill_of_runtime_agent_leaves_playable_file(rec_gateway: Gateway) -> None:
    gw = rec_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    await type_for(gw, sid, 2.5)
    path = rec_path(gw, sid)
    await wait_file(path, lambda d: d.count(b"moof") >= 2)
    pod = gw.extra["app"][MANAGER].get(sid).pod
    os.kill(int(pod["agent_pid"]), signal.SIGKILL)
    copy = path.with_name("killed-copy.mp4")
    shutil.copyfile(path, copy)
    code, errors = ffmpeg_decode_errors(copy)
    assert code == 0, errors
    assert float(ffprobe(copy)["format"]["duration"]) > 1.0

    ended = await gw.wait_status(sid, {"failed", "stopped"})
    assert ended["status"] == "failed"
    await wait_event(gw, sid, "recording", status="stopped", reason="agent_exited")
    await wait_event(gw, sid, "recording", status="finalised")
    assert ffmpeg_decode_errors(path)[0] == 0
    assert float(ffprobe(path)["format"]["duration"]) > 1.0

    # Retention by age: this ended session's recording goes; GET says so.
    app = gw.extra["app"]
    import dataclasses
    old_config = app[RECORDINGS]._config
    service = RecordingService(dataclasses.replace(old_config, recording_max_age_hours=1e-9),
                               app[MANAGER])
    assert await service.enforce_retention() == [(sid, "max_age")]
    assert not path.exists()
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/recording"),
                           headers=gw.auth) as resp:
        assert resp.status == 404
        assert "deleted" in (await resp.json())["detail"]
    await wait_event(gw, sid, "recording", status="deleted", reason="max_age")


@pytest.mark.timeout(90)
async def test_recording_off_is_404(rec_gateway: Gateway) -> None:
    gw = rec_gateway
    session = await gw.create_running(resolution="640x480", enable_recording=False)
    sid = session["session_id"]
    for suffix in ("", "/chapters"):
        async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/recording{suffix}"),
                               headers=gw.auth) as resp:
            assert resp.status == 404
            assert resp.content_type == "application/problem+json"
    assert not (gw.state_dir / "sessions" / sid / "recording").exists()
    async with gw.http.get(gw.url("/api/visual-sessions/nope/recording"),
                           headers=gw.auth) as resp:
        assert resp.status == 404
    await gw.stop(sid)
    assert await events_of(gw, sid, "recording") == []


@pytest.mark.timeout(90)
async def test_low_disk_stops_recording_not_the_session(tmp_path: Path) -> None:
    # A free-space floor no disk can meet: the recorder stops at its first check.
    async for gw in in_process_gateway(tmp_path, apps=("xterm",),
                                       recording_min_free_mb=1 << 40):
        session = await gw.create_running(resolution="640x480")
        sid = session["session_id"]
        event = await wait_event(gw, sid, "recording", status="stopped")
        assert event["reason"] == "disk_low"
        assert (await gw.get(sid))["status"] == "running"
        await type_for(gw, sid, 0.5)  # the session goes on
        path = rec_path(gw, sid)
        assert ffmpeg_decode_errors(path)[0] == 0
        await gw.stop(sid)
        await wait_event(gw, sid, "recording", status="finalised")
