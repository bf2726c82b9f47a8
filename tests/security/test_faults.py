"""Faults are survived: a killed runtime agent, a killed gateway, a full disk.

* SIGKILL of the runtime agent (the Python process itself, not just its
  sandbox) fails the session with a reason naming the runtime agent, and the
  recording up to the kill is finalised and plays.
* SIGKILL of ``visual-runtime serve`` while a WebRTC viewer watches and the
  recording runs: media keeps flowing (it never went through the gateway),
  the restarted gateway re-adopts the session, its tokens still work, a new
  viewer connects, and the recording spans the outage and plays.
* A recordings disk that really fills up (a small tmpfs, no free-space floor):
  recording stops with an event on ENOSPC and the session goes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.appkeys import MANAGER
from gateway.backends.xauth import XAUTHORITY_IN_POD
from gateway.sessions.events import EventHub
from tests.gateway_fixtures import (
    API_TOKEN,
    Gateway,
    in_process_gateway,
    pod_processes,
    start_served_gateway,
    stop_served_gateway,
    wait_no_pod_processes,
)
from tests.recording.helpers import (
    events_of,
    ffmpeg_decode_errors,
    ffprobe,
    type_for,
    wait_event,
    wait_file,
)
from tests.webrtc.whep_client import Typist, WhepViewer, wait_until

pytestmark = pytest.mark.timeout(180)


def _rec(state_dir: Path, sid: str) -> Path:
    return state_dir / "sessions" / sid / "recording" / "recording.mp4"


def _agent_python(state_dir: Path, sid: str) -> int:
    """Pid of the session's runtime agent itself (``python -m agent_side``)."""
    found = []
    for pid in pod_processes(state_dir):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if (b"python" in cmd[0] and b"agent_side" in cmd and b"-m" in cmd
                and f"{sid}.agent" in cgroup):
            found.append(pid)
    assert len(found) == 1, found
    return found[0]


async def test_sigkill_of_the_runtime_agent_fails_the_session_and_the_recording_plays(
        tmp_path: Path) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",)):
        session = await gw.create_running(resolution="640x480")
        sid = session["session_id"]
        await type_for(gw, sid, 2.0)
        path = _rec(gw.state_dir, sid)
        await wait_file(path, lambda d: d.count(b"moof") >= 2)
        os.kill(_agent_python(gw.state_dir, sid), signal.SIGKILL)

        ended = await gw.wait_status(sid, {"failed", "stopped", "expired"})
        assert ended["status"] == "failed" and ended["stop_reason"] == "error"
        assert "the runtime agent exited (killed by SIGKILL)" in ended["error"], ended["error"]
        assert "app sandbox" not in ended["error"]  # the desktop was fine
        await wait_event(gw, sid, "recording", status="stopped", reason="agent_exited")
        await wait_event(gw, sid, "recording", status="finalised")
        assert ffmpeg_decode_errors(path) == (0, "")
        assert float(ffprobe(path)["format"]["duration"]) > 1.5
        # The API keeps answering about it; the recording downloads.
        async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/recording"),
                               headers=gw.auth) as resp:
            assert resp.status == 200 and len(await resp.read()) == path.stat().st_size
        assert wait_no_pod_processes(gw.state_dir) == []


async def test_sigkill_of_the_gateway_with_a_viewer_and_recording(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, url = start_served_gateway(state, "--apps", "xterm")
    try:
        async with aiohttp.ClientSession() as http:
            gw = Gateway(url, API_TOKEN, state, http)
            session = await gw.create_running(resolution="640x480")
            sid, tokens = session["session_id"], session["tokens"]
            viewer = WhepViewer(gw, sid, tokens["view"])
            try:
                async with Typist(gw, sid):
                    await viewer.connect()
                    await viewer.wait_frames(10)
                await wait_file(_rec(state, sid), lambda d: d.count(b"moof") >= 1)
                killed_at = time.monotonic()
                stop_served_gateway(proc, signal.SIGKILL)
                assert pod_processes(state), "the pod must outlive the gateway"
                # Media goes viewer <-> runtime agent: frames keep coming while it is down.
                frames = len(viewer.frames)
                await _nudge_screen(state, sid)
                await wait_until(lambda: len(viewer.frames) > frames, 20,
                                 "frames while the gateway is down")
                assert viewer.pc.connectionState == "connected"

                proc, url = start_served_gateway(state, "--apps", "xterm")
                gw = Gateway(url, API_TOKEN, state, http)
                adopted = await gw.get(sid)
                assert adopted["status"] == "running", adopted
                # Every token still works.
                for token in (tokens["view"], tokens["control"], API_TOKEN):
                    async with http.get(gw.url(f"/api/visual-sessions/{sid}"),
                                        headers={"Authorization": f"Bearer {token}"}) as resp:
                        assert resp.status == 200
                async with http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                                     json={"action": "take"},
                                     headers={"Authorization": f"Bearer {tokens['control']}"}
                                     ) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                                     json={"action": "release"},
                                     headers={"Authorization": f"Bearer {tokens['control']}"}
                                     ) as resp:
                    assert resp.status == 200, await resp.text()
                # The old viewer is still watching; a new one connects through the new gateway.
                second = WhepViewer(gw, sid, tokens["view"])
                try:
                    async with Typist(gw, sid):
                        await second.connect()
                        await second.wait_frames(5)
                        frames = len(viewer.frames)
                        await wait_until(lambda: len(viewer.frames) > frames, 20,
                                         "old viewer frames after the restart")
                finally:
                    await second.close()
                outage = time.monotonic() - killed_at
            finally:
                await viewer.close()
            stopped = await gw.stop(sid)
            assert stopped["status"] == "stopped"
            await wait_event(gw, sid, "recording", status="finalised")
            path = _rec(state, sid)
            assert ffmpeg_decode_errors(path) == (0, "")
            # One file across the restart: it covers the time the gateway was down.
            assert float(ffprobe(path)["format"]["duration"]) >= outage - 1.0
            recording = [e["status"] for e in await events_of(gw, sid, "recording")]
            assert recording == ["started", "stopped", "finalised"], recording
    finally:
        stop_served_gateway(proc)
    assert wait_no_pod_processes(state) == []


async def _nudge_screen(state: Path, sid: str) -> None:
    """Change the session's screen without the gateway (it is down): xdotool, inside."""
    from gateway.sessions.store import SessionStore

    store = SessionStore(state / "sessions.sqlite3")
    store.open()
    try:
        pod = {s.session_id: s.pod for s in store.load_all()}[sid]
    finally:
        store.close()
    ns_pid, uid = int(pod["app_ns_pid"]), int(pod["uid_app"])
    script = ("for i in $(seq 1 40); do xdotool type --delay 0 x; sleep 0.05; done")
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--target={ns_pid}", "--mount", "--pid", "--ipc", "--net", "--",
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
        "--", "env", "DISPLAY=:0", f"XAUTHORITY={XAUTHORITY_IN_POD}", "sh", "-c", script,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await proc.wait()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``state/sessions`` on a 24 MiB tmpfs: the disk recordings are written to."""
    sessions = tmp_path / "state" / "sessions"
    sessions.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "vr-test-full",
                    str(sessions)], check=True)
    try:
        yield sessions
    finally:
        if subprocess.run(["umount", str(sessions)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(sessions)], check=False)


async def test_full_recordings_disk_stops_recording_not_the_session(
        tmp_path: Path, small_disk: Path) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), recording_min_free_mb=0):
        session = await gw.create_running(resolution="640x480")
        sid = session["session_id"]
        await wait_event(gw, sid, "recording", status="started")
        # Fill the disk, leaving a little for the recording to run into.
        filler = small_disk / "filler"
        free = os.statvfs(small_disk)
        size = free.f_bavail * free.f_frsize - 256 * 1024
        with open(filler, "wb") as f:
            f.truncate(0)
            chunk = b"\xa5" * (1 << 20)
            while size > 0:
                f.write(chunk[: min(size, len(chunk))])
                size -= len(chunk)
        # The event log is on the full disk too: SSE readers get events from memory.
        events: EventHub = gw.extra["app"][MANAGER].events

        def stops(sid: str = sid, events: EventHub = events) -> list[dict[str, Any]]:
            return [e for e in events.history(sid)
                    if e["type"] == "recording" and e["status"] == "stopped"]
        deadline = time.monotonic() + 90
        while not stops():
            assert time.monotonic() < deadline, "the recording never hit the full disk: " + (
                (gw.state_dir / "sessions" / sid / "logs" / "agent.log").read_text()[-1500:])
            await type_for(gw, sid, 0.5)
        free_now = os.statvfs(small_disk)
        assert free_now.f_bavail * free_now.f_frsize < 64 * 1024  # really full
        assert stops()[0]["reason"] == "write_error", stops()
        assert "No space left on device" in (
            gw.state_dir / "sessions" / sid / "logs" / "agent.log").read_text()
        # The session goes on: running, actions work, screenshots work.
        assert (await gw.get(sid))["status"] == "running"
        await type_for(gw, sid, 0.5)
        async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                               headers=gw.auth) as resp:
            assert resp.status == 200
        # What was recorded up to the full disk plays once space is back.
        filler.unlink()
        await gw.stop(sid)
        await wait_event(gw, sid, "recording", status="finalised")
        path = _rec(gw.state_dir, sid)
        assert ffmpeg_decode_errors(path)[0] == 0
        assert float(ffprobe(path)["format"]["duration"]) > 0.5
        manager = gw.extra["app"][MANAGER]
        assert manager.get(sid).status.value == "stopped"
        # Events the full disk could not take reached the log once space was back,
        # in order and whole.
        logged = await events_of(gw, sid, "recording")
        assert [e["status"] for e in logged] == ["started", "stopped", "finalised"]
        ids = [e["id"] for e in await events_of(gw, sid, "status")]
        assert ids == sorted(ids)


async def test_agent_restarts_keep_the_session_viewers_control_and_recording(
        tmp_path: Path) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), agent_restarts=1):
        session = await gw.create_running(resolution="640x480")
        sid, control = session["session_id"], session["tokens"]["control"]
        viewer = WhepViewer(gw, sid, session["tokens"]["view"])
        try:
            async with Typist(gw, sid):
                await viewer.connect()
                await viewer.wait_frames(5)
                await wait_file(_rec(gw.state_dir, sid), lambda d: d.count(b"moof") >= 2)
        finally:
            await viewer.close()
        take = {"Authorization": f"Bearer {control}"}
        async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                                json={"action": "take"}, headers=take) as resp:
            assert resp.status == 200
        first_agent = _agent_python(gw.state_dir, sid)
        os.kill(first_agent, signal.SIGKILL)

        restarted = await wait_event(gw, sid, "agent_restarted")
        assert restarted["attempt"] == 1 and restarted["max"] == 1
        assert "the runtime agent exited (killed by SIGKILL)" in restarted["reason"]
        after = await gw.get(sid)
        assert after["status"] == "running" and after["error"] is None
        assert _agent_python(gw.state_dir, sid) != first_agent
        async with gw.http.get(gw.url("/metrics")) as resp:
            assert "visual_runtime_agent_restarts_total 1" in await resp.text()
        # Control survived the restart: the human still holds it.
        async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"),
                                json={"action": "mouse_move", "coordinate": [5, 5]},
                                headers=gw.auth) as resp:
            assert resp.status == 409
        async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                                json={"action": "release"}, headers=take) as resp:
            assert resp.status == 200
        # A viewer reconnects with the same token and sees the same desktop.
        again = WhepViewer(gw, sid, session["tokens"]["view"])
        try:
            async with Typist(gw, sid):
                await again.connect()
                await again.wait_frames(5)
                await wait_file(_rec(gw.state_dir, sid), lambda d: d.count(b"moof") >= 2)
        finally:
            await again.close()

        # Restarts used up: the next crash fails the session, with the reason.
        os.kill(_agent_python(gw.state_dir, sid), signal.SIGKILL)
        ended = await gw.wait_status(sid, {"failed", "stopped", "expired"})
        assert ended["status"] == "failed"
        assert "the runtime agent exited (killed by SIGKILL)" in ended["error"]
        await wait_event(gw, sid, "recording", status="finalised")
        statuses = [e["status"] for e in await events_of(gw, sid, "recording")]
        assert statuses == ["started", "stopped", "started", "stopped", "finalised"], statuses
        # One recording, both segments joined, playable.
        path = _rec(gw.state_dir, sid)
        assert ffmpeg_decode_errors(path) == (0, "")
        assert float(ffprobe(path)["format"]["duration"]) > 2.0
        left = sorted(p.name for p in path.parent.iterdir())
        assert not [n for n in left if n.startswith("recording.part-") or n == "segments.txt"], left
