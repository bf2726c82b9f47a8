"""The session recorder: the shared H.264 packets muxed into fragmented MP4.

The recorder is one more subscriber of the :class:`~agent_side.media.VideoSource`
(``subscribe("h264", name="recorder")``): no second capture, no second encode.
Packets are written with libavformat's mp4 muxer in fragmented mode
(``frag_keyframe+empty_moov+default_base_moof``, a fragment at least every
``fragment_s``), flushed to disk fragment by fragment, so a SIGKILL leaves a
file that plays up to about a second before the kill.

Timing: packets carry wall-clock pts (1/90000 s). Each packet is held until
the next one arrives, so its duration is exact (variable frame rate). The
video source only encodes when the screen changes; when nothing arrives for
``idle_keyframe_s`` the recorder asks for a keyframe (then one every
``keyframe_interval_s`` while idle), which writes out the pending fragment
and keeps the timeline honest on a static screen. At :meth:`Recorder.aclose`
the held packet lasts until "now", so the file's duration is the wall-clock
recording length.

Disk safety: every ``disk_check_s`` the free space of the recording folder
is checked; below ``min_free_mb`` (or on a write error) recording stops, the
file is closed cleanly and the session goes on.

Beside ``recording.mp4`` the recorder keeps ``recording.json`` (state,
start time, reason of a stop), which the gateway reads for events, chapters
and finalisation.

Exceptions: :class:`RecorderError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import errno
import fractions
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import av

from .errors import AgentSideError
from .media import PacketSubscription, SubscriptionClosed, VideoSource

__all__ = ["RECORDING_FILE", "STATE_FILE", "Recorder", "RecorderConfig", "RecorderError"]

logger = logging.getLogger(__name__)

RECORDING_FILE = "recording.mp4"
"""Name of the MP4 inside the recording folder."""
STATE_FILE = "recording.json"
"""Name of the recorder's state file inside the recording folder."""
TIME_BASE = fractions.Fraction(1, 90000)
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


class RecorderError(AgentSideError):
    """The recording could not be opened or written."""


@dataclasses.dataclass(frozen=True)
class RecorderConfig:
    """Settings of one session's recorder."""

    folder: Path
    """Folder the MP4 and its state file are written to (created if missing)."""
    width: int
    """Video width (as encoded by the video source)."""
    height: int
    """Video height."""
    session_id: str = ""
    """Put in every log line and in the state file."""
    keyframe_interval_s: float = 2.0
    """Longest gap between keyframes while idle (the source enforces it while busy)."""
    idle_keyframe_s: float = 1.0
    """With no packet for this long, ask for a keyframe (flushes the open fragment)."""
    idle_repeat_s: float = 10.0
    """Then, while the screen stays static, one keyframe this often: it only keeps
    the file's duration near the wall clock (the picture is already on disk), so it
    can be rare; each costs a full frame (tens of kB at 1600x900)."""
    fps: int = 30
    """Frame-rate cap of the video source; timestamps are kept on its grid."""
    fragment_s: float = 1.0
    """Longest fragment: what a crash can lose at most while the screen changes."""
    min_free_mb: int = 256
    """Stop recording when the folder's file system has less free space than this."""
    disk_check_s: float = 5.0
    """How often the free space is checked."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"bad size {self.width}x{self.height}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps must be 1-120, got {self.fps!r}")
        for name in ("keyframe_interval_s", "idle_keyframe_s", "idle_repeat_s", "fragment_s",
                     "disk_check_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.min_free_mb < 0:
            raise ValueError(f"min_free_mb must be >= 0, got {self.min_free_mb!r}")


class _Muxer:
    """The libavformat side; every method runs on the recorder's one worker thread."""

    def __init__(self, path: Path, width: int, height: int, fragment_s: float) -> None:
        self._container: Any = av.open(
            str(path), "w", format="mp4",
            options={"movflags": MOVFLAGS,
                     "frag_duration": str(int(fragment_s * 1_000_000)),
                     "flush_packets": "1"},
        )
        self._stream = self._container.add_mux_stream("h264", width=width, height=height)
        self._stream.time_base = TIME_BASE

    def write(self, data: bytes, pts: int, duration: int, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.pts = pts
        packet.dts = pts
        packet.duration = max(1, duration)
        packet.time_base = TIME_BASE
        packet.is_keyframe = keyframe
        packet.stream = self._stream
        self._container.mux_one(packet)

    def close(self) -> None:
        self._container.close()


@dataclasses.dataclass
class _Held:
    data: bytes
    pts: int
    keyframe: bool


class Recorder:
    """Records one session's video. ``start()`` subscribes; ``aclose()`` finishes the file."""

    def __init__(self, source: VideoSource, config: RecorderConfig) -> None:
        self.config = config
        self._source = source
        self._prefix = f"session {config.session_id}: " if config.session_id else ""
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="recorder")
        self._sub: PacketSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._muxer: _Muxer | None = None
        self._held: _Held | None = None
        self._pts0: int | None = None
        self._clock_offset = 0.0  # monotonic seconds minus pts seconds
        self.packets = 0
        """Packets written so far."""
        self.bytes = 0
        """Bytes of H.264 written so far."""
        self._next_disk_check = 0.0
        self._closed = False
        self._closing_at: float | None = None
        self._final_frame = False
        self.state = "idle"
        """``idle`` (no packet yet), ``recording``, ``stopped`` or ``failed``."""
        self.stop_reason: str | None = None
        """Why recording stopped early (``disk_low``, ``write_error``) or None."""
        self.started_at: str | None = None
        self.idle_keyframes = 0
        """Keyframes requested because the screen was static."""

    @property
    def path(self) -> Path:
        return self.config.folder / RECORDING_FILE

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the video source and start writing on the first keyframe."""
        if self._task is not None:
            return
        try:
            await asyncio.to_thread(self.config.folder.mkdir, parents=True, exist_ok=True)
        except OSError as e:
            # A broken recording folder must not take the live session down.
            logger.error("%srecording disabled: %s", self._prefix, e)
            self.state, self.stop_reason = "failed", "folder_unusable"
            return
        self._sub = self._source.subscribe("h264", name="recorder")
        self._task = asyncio.create_task(self._run(), name="recorder")
        logger.info("%srecorder started (%s)", self._prefix, self.path)

    async def aclose(self) -> None:
        """Write the last packet (lasting until now), close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.state == "recording" and self._sub is not None and self._task is not None:
            # A fresh last frame ends the timeline at "now": a remux keeps
            # frame durations only as gaps between frames, not the last one's.
            self._closing_at = time.monotonic()
            self._sub.request_keyframe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=1.5)
        # Closing the subscription ends the loop after the packet in hand is
        # written (cancelling mid-write could write the held packet twice).
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except TimeoutError:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._sub = None
        if self.state == "recording":
            await self._finish("stopped", None)
        self._executor.shutdown(wait=True)
        logger.info("%srecorder closed", self._prefix)

    def describe(self) -> dict[str, Any]:
        """State for ``/stats`` and the state file."""
        return {
            "state": self.state,
            "stop_reason": self.stop_reason,
            "started_at": self.started_at,
            "file": RECORDING_FILE,
            "width": self.config.width,
            "height": self.config.height,
            "packets": self.packets,
            "bytes": self.bytes,
            "idle_keyframes": self.idle_keyframes,
            "session_id": self.config.session_id,
        }

    # -- internals -------------------------------------------------------

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self) -> None:
        sub = self._sub
        assert sub is not None
        cfg = self.config
        next_idle = time.monotonic() + cfg.idle_keyframe_s
        idle_since: float | None = None  # when the current idle keyframe was asked for
        while self.state in ("idle", "recording"):
            now = time.monotonic()
            if now >= next_idle:
                # Static screen: a fresh keyframe closes the open fragment and
                # gives the held packet its real duration.
                self.idle_keyframes += 1
                idle_since = now
                sub.request_keyframe()
                next_idle = now + cfg.idle_repeat_s
            if self.state == "recording" and now >= self._next_disk_check:
                self._next_disk_check = now + cfg.disk_check_s
                if not await self._disk_ok():
                    return
            checks = [next_idle] + ([self._next_disk_check] if self.state == "recording" else [])
            wait = max(0.02, min(checks) - now)
            try:
                packet = await asyncio.wait_for(sub.get(), timeout=wait)
            except TimeoutError:
                continue
            except SubscriptionClosed:
                break
            arrival = time.monotonic()
            if idle_since is not None and arrival - idle_since < cfg.idle_keyframe_s:
                # The idle keyframe and the refinements that follow it (agent_side.settle)
                # are not activity: keep the slow idle series going.
                next_idle = idle_since + cfg.idle_repeat_s
            else:
                idle_since = None
                next_idle = arrival + cfg.idle_keyframe_s
            assert packet.pts is not None
            try:
                await self._accept(bytes(packet), int(packet.pts), bool(packet.is_keyframe))
            except (OSError, av.error.FFmpegError) as e:
                logger.error("%srecording stopped: write failed: %s", self._prefix, e)
                await self._finish("stopped", "write_error")
                return
            if self._closing_at is not None and arrival >= self._closing_at:
                self._final_frame = True
                return  # the final frame is held; aclose() writes it

    async def _accept(self, data: bytes, pts: int, keyframe: bool) -> None:
        if self._muxer is None:
            if not keyframe:
                return  # the subscription starts at a keyframe; belt and braces
            self._muxer = await self._call(_Muxer, self.path, self.config.width,
                                           self.config.height, self.config.fragment_s)
            self._pts0 = pts
            self._clock_offset = time.monotonic() - pts / 90000
            self.started_at = _rfc3339(time.time())
            self.state = "recording"
            await self._save_state()
            logger.info("%srecording to %s", self._prefix, self.path)
        assert self._pts0 is not None
        # Timestamps on a 1/fps grid: players and ffmpeg guess the stream's
        # rate from them; two frames in one slot made `ffmpeg -f null` warn
        # about non-monotonic output dts. The lag this adds is bounded (the
        # source averages at most fps) and caught up in the next pause.
        step = 90000 // self.config.fps
        rel = round((pts - self._pts0) / step) * step
        held = self._held
        if held is not None:
            if rel <= held.pts:
                rel = held.pts + step
            await self._call(self._muxer.write, held.data, held.pts, rel - held.pts, held.keyframe)
            self.packets += 1
            self.bytes += len(held.data)
        self._held = _Held(data, rel, keyframe)

    async def _finish(self, state: str, reason: str | None) -> None:
        """Write the held packet up to now, close the muxer, save the state."""
        muxer, held = self._muxer, self._held
        self._held = None
        self._muxer = None
        try:
            if muxer is not None and held is not None:
                now_pts = int((time.monotonic() - self._clock_offset) * 90000) - (self._pts0 or 0)
                step = 90000 // self.config.fps
                last = step if self._final_frame else max(now_pts - held.pts, step)
                await self._call(muxer.write, held.data, held.pts, last, held.keyframe)
                self.packets += 1
                self.bytes += len(held.data)
            if muxer is not None:
                await self._call(muxer.close)
        except (OSError, av.error.FFmpegError) as e:
            logger.error("%sclosing the recording failed: %s", self._prefix, e)
            reason = reason or "write_error"
        self.state = state
        self.stop_reason = reason
        await self._save_state()
        logger.info("%srecording %s%s", self._prefix, state, f" ({reason})" if reason else "")

    async def _disk_ok(self) -> bool:
        try:
            st = await asyncio.to_thread(os.statvfs, self.config.folder)
        except OSError as e:
            logger.warning("%scannot check free disk space: %s", self._prefix, e)
            return True
        free_mb = st.f_bavail * st.f_frsize / (1024 * 1024)
        if free_mb >= self.config.min_free_mb:
            return True
        logger.warning("%srecording stopped: only %.0f MB free (minimum %d MB); "
                       "the session goes on", self._prefix, free_mb, self.config.min_free_mb)
        await self._finish("stopped", "disk_low")
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        return False

    async def _save_state(self) -> None:
        state = self.describe()
        state["updated_at"] = _rfc3339(time.time())
        path = self.config.folder / STATE_FILE
        try:
            await asyncio.to_thread(_write_atomic, path, json.dumps(state).encode())
        except OSError as e:
            logger.warning("%scannot write %s: %s", self._prefix, path, e)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno != errno.ENOSPC or not path.exists():
            raise
        # A full disk is exactly when the gateway must learn that recording stopped.
        _overwrite_in_place(path, data)


def _overwrite_in_place(path: Path, data: bytes) -> None:
    """Rewrite *path*'s existing blocks without truncating it (padded with JSON
    whitespace), which needs no free space; readers tolerate a torn read."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(data.ljust(size, b" "))


def _rfc3339(ts: float) -> str:
    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
