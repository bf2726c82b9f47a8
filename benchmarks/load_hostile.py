"""The load benchmark's hostile-viewer phase: one view token against one session.

Issue 21's target: a view-token holder cannot push the runtime agent's memory
beyond its cgroup, nor cut another viewer's frame rate by more than 20 %.

:func:`measure` runs on a session that shows :data:`ANIM_PAGE_URL` (a canvas
Chromium redraws on every animation frame, 60 Hz: a counter, a clock, a spinner
and a progress bar, on the navy background :func:`~benchmarks.load_agent.open_page`
waits for). An honest viewer (an aiortc WHEP viewer with a view token of its
own) watches throughout. It counts the frames it *receives* (the RTP packet
that ends each frame, marker bit) and does not decode them: it shares two cores
with the session, the gateway and the attacker, where a real viewer decodes on
a machine of its own, and decoding 1600x900 at 50 fps here would measure this
process's share of the CPU rather than what the runtime agent sends.

1. **before**: ``baseline_s`` with nobody else;
2. **attack**: :mod:`benchmarks.load_attacker`, in a process of its own, does
   everything the session's view token may for ``attack_s`` (lossy WHEP peers
   with a 10 kbit/s REMB and a PLI every 0.2 s, input-channel messages up to and
   over the guard, slow WebSocket viewers, a noVNC client, 200 offers without
   candidates);
3. **after**: ``baseline_s`` alone again, once the attacker has gone. The
   machine is shared (other work comes and goes), so the baseline is the mean
   of the windows before and after.

Per window: the honest viewer's decoded frames/s, the encoder's frames/s
(``/metrics``), and the runtime agent's memory: its cgroup's charge
(``visual-runtime/<sid>.agent``, sampled every 0.25 s) and the agent process's
RSS, against the cgroup's limit; the machine's CPU use. ``fps_ratio`` =
attacked / mean(before, after).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness import find_agent_pid, tree_cpu_seconds
from benchmarks.leaks import machine_ticks, rss_mb
from benchmarks.load_viewer import Viewer, parse_encoded
from gateway.backends.cgroup import Cgroup
from visual_runtime_client.client import RemoteSession, VisualRuntimeClient

ROOT = Path(__file__).resolve().parent.parent

ANIM_PAGE_URL = (
    "data:text/html,<body%20style=background:navy;margin:0><canvas%20id=c%20width=640%20"
    "height=360></canvas><script>x=c.getContext('2d');k=0;f=()=>{k++;x.fillStyle='navy';"
    "x.fillRect(0,0,640,360);x.fillStyle='white';x.font='40px%20monospace';"
    "x.fillText(k+'/'+Date.now(),20,60);x.lineWidth=12;x.strokeStyle='orange';"
    "x.beginPath();x.arc(320,200,70,k/9,k/9+4);x.stroke();x.fillStyle='lime';"
    "x.fillRect(20,320,k*3-600*Math.floor(k/200),20);requestAnimationFrame(f)};f()</script>")
"""A 640x360 canvas redrawn on every animation frame (typed into Chromium's address bar,
which decodes ``%xx``: no ``%`` but the ``%20`` spaces)."""


@dataclass
class Window:
    """What one window measured."""

    seconds: float = 0.0
    viewer_frames: int = 0
    """Frames the honest viewer received (their last RTP packet arrived)."""
    viewer_fps: float = 0.0
    encoded_fps: float | None = None
    agent_cgroup_mb_max: float | None = None
    agent_rss_mb_max: float | None = None
    agent_cpu_pct: float | None = None
    """CPU of the runtime agent and its children (x11vnc) over the window, % of one core."""
    governor: dict[str, int] = field(default_factory=dict)
    """What limited the frame rate, sampled every 0.25 s from the agent's ``/stats``
    (``cap``, ``cpu``, ``encode_time``, ``consumer``) -> samples."""
    keyframes: int | None = None
    """Keyframes the agent encoded during the window."""
    machine_cpu_pct: float | None = None
    """All CPUs of the machine, busy % (other work on the machine included)."""
    honest_remb: list[int] = field(default_factory=list)
    """The honest peer's bandwidth estimates as the agent saw them (distinct, in order)."""
    honest_paced_out: int | None = None
    """Frames the agent held back from the honest peer to fit its estimate."""
    honest_rtp_lost: int | None = None
    """RTP packets the honest viewer lost during the window."""


@dataclass
class HostileRun:
    session_id: str
    baseline: Window = field(default_factory=Window)
    attacked: Window = field(default_factory=Window)
    after: Window = field(default_factory=Window)
    agent_limit_mb: float | None = None
    agent_hwm_mb: float | None = None
    """The agent process's peak RSS (``VmHWM``) at the end."""
    oom_kills: int | None = None
    attacker: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def baseline_fps(self) -> float | None:
        """The honest viewer's frame rate alone: the mean of before and after."""
        alone = [w.viewer_fps for w in (self.baseline, self.after) if w.seconds]
        return round(sum(alone) / len(alone), 2) if alone else None

    @property
    def fps_ratio(self) -> float | None:
        if not self.baseline_fps:
            return None
        return round(self.attacked.viewer_fps / self.baseline_fps, 3)

    @property
    def peak_mb(self) -> float | None:
        peaks = [w.agent_cgroup_mb_max for w in (self.baseline, self.attacked, self.after)
                 if w.agent_cgroup_mb_max is not None]
        return max(peaks) if peaks else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "baseline_fps": self.baseline_fps, "fps_ratio": self.fps_ratio,
                "peak_mb": self.peak_mb}


def _limit_mb(cg: Cgroup) -> float | None:
    for name in ("memory.max", "memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            return round(int((cg.dirs[0] / name).read_text()) / 2**20, 1)
    return None


def _hwm_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


class _FrameCounter:
    """Stands in for a receiver's jitter buffer: notes when each frame's last packet
    (marker bit) arrives, hands nothing to the decoder."""

    def __init__(self, times: list[float]) -> None:
        self.times = times

    def add(self, packet: Any) -> tuple[bool, None]:
        if packet.marker:
            self.times.append(time.monotonic())
        return False, None

    def remove(self, count: int) -> None:
        pass


def _count_without_decoding(viewer: Viewer) -> None:
    for transceiver in viewer.pc.getTransceivers():
        transceiver.receiver._RTCRtpReceiver__jitter_buffer = (  # type: ignore[attr-defined]
            _FrameCounter(viewer.frame_times))


class _Sampler:
    """The agent's memory every 0.25 s into the current window's maxima."""

    def __init__(self, cg: Cgroup, pid: int, agent_socket: Path) -> None:
        self.cg, self.pid = cg, pid
        self.window = Window()
        self._stop = asyncio.Event()
        self.agent_socket = agent_socket
        self.keyframes: int | None = None
        self.honest_peer = ""
        self.honest_paced_out: int | None = None

    async def _stats(self, http: aiohttp.ClientSession) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            async with http.get("http://agent/stats") as resp:
                stats = await resp.json()
            media = stats["media"]
            for peer in stats["peers"]:
                if peer["peer_id"] == self.honest_peer:
                    self.honest_paced_out = peer.get("frames_paced_out")
                    remb = peer.get("bitrate_estimate")
                    if remb is not None and remb not in self.window.honest_remb[-1:]:
                        self.window.honest_remb.append(remb)
            reason = str(media["fps"].get("reason"))
            self.window.governor[reason] = self.window.governor.get(reason, 0) + 1
            self.keyframes = int(media["keyframes"])

    async def run(self) -> None:
        async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.agent_socket)),
                timeout=aiohttp.ClientTimeout(total=5)) as http:
            await self._sample(http)

    async def _sample(self, http: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            await self._stats(http)
            charged = await asyncio.to_thread(self.cg.memory_current)
            rss = await asyncio.to_thread(rss_mb, self.pid)
            w = self.window
            if charged is not None:
                mb = round(charged / 2**20, 1)
                w.agent_cgroup_mb_max = max(w.agent_cgroup_mb_max or 0.0, mb)
            w.agent_rss_mb_max = max(w.agent_rss_mb_max or 0.0, round(rss, 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.25)

    def stop(self) -> None:
        self._stop.set()


async def _encoded(client: VisualRuntimeClient, sid: str) -> int | None:
    with contextlib.suppress(Exception):
        body = await client.request("GET", "/metrics", expect="bytes")
        return parse_encoded(body.decode(errors="replace")).get(sid)
    return None


async def _window(client: VisualRuntimeClient, viewer: Viewer, sampler: _Sampler, sid: str,
                  pid: int, until: asyncio.Future[Any] | float) -> Window:
    """Measure from now until *until* (a monotonic time, or a future that completes)."""
    w = sampler.window = Window()
    k0, p0 = sampler.keyframes, sampler.honest_paced_out
    await viewer.sample_rtp()
    t0, n0, e0 = time.monotonic(), len(viewer.frame_times), await _encoded(client, sid)
    cpu0 = await asyncio.to_thread(tree_cpu_seconds, (pid,))
    busy0, total0 = machine_ticks()
    if isinstance(until, float):
        await asyncio.sleep(max(0.0, until - time.monotonic()))
    else:
        await until
    t1, n1, e1 = time.monotonic(), len(viewer.frame_times), await _encoded(client, sid)
    cpu1 = await asyncio.to_thread(tree_cpu_seconds, (pid,))
    busy1, total1 = machine_ticks()
    w.machine_cpu_pct = round((busy1 - busy0) / max(1, total1 - total0) * 100, 1)
    w.seconds = round(t1 - t0, 2)
    w.viewer_frames = n1 - n0
    w.viewer_fps = round((n1 - n0) / (t1 - t0), 2)
    if e0 is not None and e1 is not None:
        w.encoded_fps = round((e1 - e0) / (t1 - t0), 2)
    w.agent_cpu_pct = round((cpu1 - cpu0) / (t1 - t0) * 100, 1)
    if k0 is not None and sampler.keyframes is not None:
        w.keyframes = sampler.keyframes - k0
    if p0 is not None and sampler.honest_paced_out is not None:
        w.honest_paced_out = sampler.honest_paced_out - p0
    await viewer.sample_rtp()
    if len(viewer.rtp) >= 2:
        w.honest_rtp_lost = viewer.rtp[-1][2] - viewer.rtp[-2][2]
    return w


async def _attacker(base_url: str, sid: str, token: str, seconds: float,
                    started: asyncio.Event) -> dict[str, Any]:
    with tempfile.TemporaryFile() as errors:
        proc = await asyncio.create_subprocess_exec(
            # "=": ids and tokens may start with "-" (argparse would take them for options)
            sys.executable, "-m", "benchmarks.load_attacker", f"--base={base_url}",
            f"--session={sid}", f"--token={token}", f"--seconds={seconds}", "--signal-start",
            stdout=asyncio.subprocess.PIPE, stderr=errors, cwd=ROOT)
        assert proc.stdout is not None
        result: dict[str, Any] = {}
        try:
            async with asyncio.timeout(seconds + 60):
                while line := await proc.stdout.readline():
                    text = line.decode(errors="replace").strip()
                    if text == "started":
                        started.set()
                    elif text.startswith("{"):
                        result = json.loads(text)
                await proc.wait()
        except TimeoutError:
            result["timed_out"] = True
        finally:
            started.set()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0 or not result or result.get("timed_out"):
            errors.seek(0)
            result["failed"] = (f"exit {proc.returncode}: "
                                f"{errors.read().decode(errors='replace')[-1500:]}")
    return result


async def measure(client: VisualRuntimeClient, http: aiohttp.ClientSession, base_url: str,
                  session: RemoteSession, baseline_s: float, attack_s: float,
                  agent_socket: Path, rcvbuf_mb: int = 4) -> HostileRun:
    """The three windows on *session* (running, showing :data:`ANIM_PAGE_URL`)."""
    sid = session.session_id
    run = HostileRun(sid)
    assert session.tokens is not None
    minted = await client.request("POST", f"/api/visual-sessions/{sid}/tokens",
                                  json_body={"kind": "view"})
    pid = await asyncio.to_thread(find_agent_pid, sid)
    cg = Cgroup(f"{sid}.agent")
    run.agent_limit_mb = _limit_mb(cg)
    viewer = Viewer(http, base_url, sid, str(minted["token"]), rcvbuf_mb)
    sampler = _Sampler(cg, pid, agent_socket)
    sampling = asyncio.create_task(sampler.run())
    try:
        await viewer.connect()
        _count_without_decoding(viewer)
        sampler.honest_peer = (viewer.location or "").rsplit("/", 1)[-1]
        if not await viewer.wait_frames(1, 45):
            run.errors.append("the honest viewer decoded no frame within 45 s")
            return run
        await asyncio.sleep(2.0)  # past the first keyframe's burst
        run.baseline = await _window(client, viewer, sampler, sid, pid,
                                     time.monotonic() + baseline_s)
        started = asyncio.Event()
        attack = asyncio.create_task(_attacker(base_url, sid, session.tokens["view"], attack_s,
                                               started))
        await started.wait()
        run.attacked = await _window(client, viewer, sampler, sid, pid, attack)
        run.attacker = attack.result()
        if "failed" in run.attacker:
            run.errors.append(f"attacker: {run.attacker['failed']}")
        run.after = await _window(client, viewer, sampler, sid, pid,
                                  time.monotonic() + baseline_s)
        run.agent_hwm_mb = _hwm_mb(pid)
        run.oom_kills = (await asyncio.to_thread(cg.limit_events)).get("memory")
        if viewer.location is not None:
            status = await viewer.delete()
            if status != 204:
                run.errors.append(f"honest viewer's WHEP DELETE answered {status}")
    finally:
        sampler.stop()
        await sampling
        await viewer.close()
    return run
