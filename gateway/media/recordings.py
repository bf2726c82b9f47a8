"""Session recordings: serving, finalising, chapters, events and retention.

The runtime agent writes ``<session>/recording/recording.mp4`` (fragmented
MP4 of the shared H.264 packets) and ``recording.json`` (its state). The
gateway:

* serves it: ``GET /api/visual-sessions/{id}/recording`` (``video/mp4``,
  ``Range``: 206 / 416) while the session runs (what is recorded so far) and
  after it ended; 404 when recording is off or the file is gone; any token of
  the session (view, control) or the API token;
* serves chapters: ``GET .../recording/chapters`` (WebVTT, or JSON with
  ``?format=json``) built from the session's ``action`` and ``control`` events;
* finalises it when the session stops (a manager stop hook, after the pod is
  gone): ``ffmpeg -c copy -movflags +faststart`` into a temporary file, then an
  atomic rename, so readers always see a complete file; the chapters are
  written beside it (``chapters.vtt``, ``chapters.json``);
* emits ``recording`` events (``started``, ``stopped`` with a reason,
  ``finalised``, ``finalise_failed``, ``deleted``) by following the agent's
  state file;
* enforces retention (``recording_max_age_hours``, ``recording_quota_mb``) on
  ended sessions, oldest first (see ``retention.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.appkeys import AUTH, CONFIG, MANAGER
from gateway.config import GatewayConfig
from gateway.errors import FieldError, ValidationProblem, not_found
from gateway.media.files import send_fd
from gateway.media.retention import RecordingEntry, folder_size, plan
from gateway.sessions.manager import SessionManager
from gateway.sessions.session import Session, SessionStatus, utcnow

__all__ = ["RECORDINGS", "RecordingService", "build_chapters", "chapters_vtt", "setup_routes"]

logger = logging.getLogger(__name__)

RECORDING_DIR = "recording"
RECORDING_FILE = "recording.mp4"
STATE_FILE = "recording.json"
CHAPTER_TYPES = ("action", "control")
MAX_CHAPTERS = 5000
"""Chapters kept: the newest ones (a longer recording's first marks are left out)."""
FINALISE_TIMEOUT_S = 600.0


def recording_dir(manager: SessionManager, session: Session) -> Path:
    return manager.session_dir(session) / RECORDING_DIR


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    _write_file(folder, STATE_FILE, json.dumps(state))


def _write_file(folder: Path, name: str, text: str) -> None:
    """Put *text* in ``folder/name`` as a new file, never through a link.

    The runtime agent's uid owns the recording folder while the pod lives: it
    could leave a symlink at any name the gateway (root) writes. So the file is
    created under a fresh random name with ``O_EXCL | O_NOFOLLOW`` and renamed
    over *name* (a rename replaces a link, it never follows it)."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tmp = f".{name}.gw-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", closefd=False) as f:
                f.write(text)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _take_folder(folder: Path, names: tuple[str, ...]) -> None:
    """After the pod is gone: make the recording folder root's (the agent's uid can
    no longer add entries) and remove whatever sits at *names*, the files the
    gateway is about to create (ffmpeg opens its output following links)."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(dir_fd, 0, 0)
        os.fchmod(dir_fd, 0o755)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _parse_ts(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --------------------------------------------------------------- chapters

def build_chapters(events: list[dict[str, Any]], started_at: datetime,
                   duration_s: float | None) -> list[dict[str, Any]]:
    """Chapters (start/end in seconds from the recording's start) of actions and control."""
    marks: list[tuple[float, dict[str, Any]]] = []
    for event in events:
        if event.get("type") not in CHAPTER_TYPES:
            continue
        ts = _parse_ts(event.get("ts"))
        if ts is None:
            continue
        marks.append((max(0.0, (ts - started_at).total_seconds()), event))
    marks.sort(key=lambda m: m[0])
    chapters = []
    for i, (start, event) in enumerate(marks):
        if i + 1 < len(marks):
            end = marks[i + 1][0]
        elif duration_s is not None:
            end = duration_s
        else:
            end = start + 1.0
        end = max(end, start + 0.001)
        chapters.append({"start": round(start, 3), "end": round(end, 3),
                         "type": event["type"], "title": _title(event),
                         "event_id": event.get("id"), "ts": event.get("ts")})
    return chapters


def _title(event: dict[str, Any]) -> str:
    if event["type"] == "control":
        return f"control: {event.get('controller', '?')} ({event.get('by', '')})".replace(" ()", "")
    title = f"action: {event.get('action', '?')}"
    if "coordinate" in event:
        title += f" {event['coordinate']}"
    return title


def chapters_vtt(chapters: list[dict[str, Any]]) -> str:
    lines = ["WEBVTT", ""]
    for i, ch in enumerate(chapters, 1):
        lines += [str(i), f"{_vtt_time(ch['start'])} --> {_vtt_time(ch['end'])}",
                  ch["title"].replace("-->", "->"), ""]
    return "\n".join(lines)


def _vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


# --------------------------------------------------------------- service

class RecordingService:
    """Follows recorders' state, finalises recordings, enforces retention."""

    def __init__(self, config: GatewayConfig, manager: SessionManager) -> None:
        self._config = config
        self._manager = manager
        self._seen: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.deleted: dict[str, str] = {}

    async def start(self) -> None:
        self._manager.stop_hooks.append(self.finalise)
        self._manager.restart_hooks.append(self.segment)
        self._task = asyncio.create_task(self._run(), name="recordings")

    async def aclose(self) -> None:
        """Stop the monitor. The stop hook stays: shutdown still finalises recordings."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        next_retention = 0.0
        loop = asyncio.get_running_loop()
        while True:
            for session in self._manager.list():
                if session.spec.enable_recording and session.status in (
                        SessionStatus.RUNNING, SessionStatus.STOPPING):
                    try:
                        await self.sync(session)
                    except Exception:  # noqa: BLE001 - one session must not stop the monitor
                        logger.exception("session %s: recording state check failed",
                                         session.session_id)
            if loop.time() >= next_retention:
                next_retention = loop.time() + self._config.retention_interval_s
                try:
                    await self.enforce_retention()
                except Exception:  # noqa: BLE001
                    logger.exception("recording retention failed")
            await asyncio.sleep(self._config.poll_interval_s)

    async def sync(self, session: Session, *, ending: bool = False) -> None:
        """Emit ``recording`` events for changes of the agent's recorder state."""
        sid = session.session_id
        folder = recording_dir(self._manager, session)
        state = await asyncio.to_thread(_read_state, folder)
        current = str(state.get("state", ""))
        if sid not in self._seen:
            # A restarted gateway re-adopting a session: what its log already says.
            self._seen[sid] = _seen_in_history(self._manager.events.last(sid, {"recording"}, 1))
        seen = self._seen.get(sid, "")
        if seen == "final":
            return  # finalised: later state reads must not emit again
        if current in ("recording", "stopped", "failed") and seen == "":
            if current != "failed":
                self._emit(sid, "started", started_at=state.get("started_at"))
            seen = "recording"
        if current in ("stopped", "failed") and seen == "recording":
            reason = state.get("stop_reason") or ("session_ended" if current == "stopped"
                                                  else "failed")
            if reason in ("disk_low", "write_error", "folder_unusable"):
                logger.warning("session %s: recording stopped (%s); the session goes on",
                               sid, reason)
            self._emit(sid, "stopped", reason=reason)
            seen = current
        elif ending and seen == "recording" and current == "recording":
            logger.warning("session %s: the runtime agent did not close the recording "
                           "(killed?); finalising what is on disk", sid)
            self._emit(sid, "stopped", reason="agent_exited")
            seen = "stopped"
        self._seen[sid] = seen

    def _emit(self, sid: str, status: str, **fields: Any) -> None:
        self._manager.events.emit(sid, "recording", status=status, **fields)

    async def finalise(self, session: Session) -> None:
        """Stop hook: faststart remux + chapters, after the pod is gone."""
        if not session.spec.enable_recording:
            return
        sid = session.session_id
        folder = recording_dir(self._manager, session)
        await self.sync(session, ending=True)
        self._seen[sid] = "final"
        try:
            await asyncio.to_thread(_take_folder, folder, (
                "recording.finalising.mp4", "segments.txt", "chapters.vtt", "chapters.json"))
        except OSError as e:  # missing, or replaced by a link: nothing of ours to finalise
            logger.warning("session %s: recording folder unusable: %s", sid, e)
            return
        src = folder / RECORDING_FILE
        parts = await asyncio.to_thread(_segments, folder)
        if parts and not await asyncio.to_thread(src.is_file):
            await asyncio.to_thread(os.replace, parts.pop(), src)
        if not await asyncio.to_thread(src.is_file):
            logger.info("session %s: no recording to finalise", sid)
            return
        tmp = folder / "recording.finalising.mp4"
        if parts:
            # Runtime agent restarts: one file, segments joined in order (the seconds the
            # agent was down are not in it).
            listing = folder / "segments.txt"
            await asyncio.to_thread(_write_file, folder, listing.name, "".join(
                f"file '{p.name}'\n" for p in [*parts, src]))
            source = ["-f", "concat", "-safe", "0", "-i", str(listing)]
        else:
            source = ["-i", str(src)]
        ok, detail = await _run_tool(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", *source, "-c", "copy",
             "-movflags", "+faststart", "-f", "mp4", str(tmp)], FINALISE_TIMEOUT_S)
        if ok and parts:
            for part in [*parts, folder / "segments.txt"]:
                await asyncio.to_thread(part.unlink, True)
        if not ok or not await asyncio.to_thread(tmp.is_file):
            logger.error("session %s: finalising the recording failed: %s", sid, detail)
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._emit(sid, "finalise_failed", detail="the fragmented recording is kept as is")
            return
        await asyncio.to_thread(os.replace, tmp, src)
        duration = await probe_duration(src)
        state = await asyncio.to_thread(_read_state, folder)
        state.update(finalised=True, duration_s=duration, finalised_at=utcnow().isoformat())
        await asyncio.to_thread(_write_state, folder, state)
        chapters = await self.chapters(session)
        await asyncio.to_thread(_write_chapters, folder, chapters)
        size = (await asyncio.to_thread(src.stat)).st_size
        self._emit(sid, "finalised", duration_s=duration, size=size, chapters=len(chapters))
        logger.info("session %s: recording finalised (%.1f s, %d bytes)", sid,
                    duration or 0.0, size)

    async def segment(self, session: Session) -> None:
        """Restart hook: keep the dead runtime agent's recording as a segment, so the
        new agent starts a file of its own (both are joined when finalising)."""
        if not session.spec.enable_recording:
            return
        sid = session.session_id
        folder = recording_dir(self._manager, session)
        await self.sync(session, ending=True)
        src = folder / RECORDING_FILE
        if await asyncio.to_thread(src.is_file):
            n = len(await asyncio.to_thread(_segments, folder)) + 1
            await asyncio.to_thread(os.replace, src, folder / f"recording.part-{n}.mp4")
            logger.info("session %s: recording kept as segment %d", sid, n)
        state = await asyncio.to_thread(_read_state, folder)
        segments = folder / "segments.json"
        if not await asyncio.to_thread(segments.exists) and state.get("started_at"):
            # Chapters of the joined file count from the first segment's start.
            await asyncio.to_thread(_write_file, folder, segments.name,
                                    json.dumps({"started_at": state["started_at"]}))
        # Until the new agent writes its own state: nothing to report.
        await asyncio.to_thread(_write_state, folder, {"state": "segmented"})
        self._seen[sid] = ""

    async def chapters(self, session: Session) -> list[dict[str, Any]]:
        folder = recording_dir(self._manager, session)
        state = await asyncio.to_thread(_read_state, folder)
        try:
            first = json.loads(await asyncio.to_thread((folder / "segments.json").read_text))
        except (OSError, ValueError):
            first = {}
        started = _parse_ts((first if isinstance(first, dict) else {}).get("started_at")
                            or state.get("started_at"))
        if started is None:
            return []
        duration = state.get("duration_s")
        if not isinstance(duration, int | float):
            end = session.ended_at or utcnow()
            duration = max(0.0, (end - started).total_seconds())
        # The newest MAX_CHAPTERS marks, read backwards from the log's end (bounded).
        events = await asyncio.to_thread(self._manager.events.last, session.session_id,
                                         set(CHAPTER_TYPES), MAX_CHAPTERS)
        return build_chapters(events, started, float(duration))

    async def enforce_retention(self) -> list[tuple[str, str]]:
        """Delete recordings past the maximum age or over the quota (ended sessions only)."""
        cfg = self._config
        max_age = (timedelta(hours=cfg.recording_max_age_hours)
                   if cfg.recording_max_age_hours > 0 else None)
        quota = cfg.recording_quota_mb * 1024 * 1024 if cfg.recording_quota_mb > 0 else None
        if max_age is None and quota is None:
            return []
        sessions = {s.session_id: s for s in self._manager.list() if s.spec.enable_recording}
        entries = []
        for sid, s in sessions.items():
            size = await asyncio.to_thread(folder_size, recording_dir(self._manager, s))
            ended = s.ended_at if s.status.terminal else None
            entries.append(RecordingEntry(sid, size, ended))
        doomed = plan(entries, utcnow(), max_age, quota)
        for sid, reason in doomed:
            await self.delete(sessions[sid], reason)
        if quota is not None:
            left = sum(e.size for e in entries if e.session_id not in dict(doomed))
            if left > quota:
                logger.warning("recordings use %d MB, over the %d MB quota, but only live "
                               "sessions' recordings remain", left >> 20, cfg.recording_quota_mb)
        return doomed

    async def delete(self, session: Session, reason: str) -> None:
        folder = recording_dir(self._manager, session)

        def wipe() -> None:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(exist_ok=True)
            _write_state(folder, {"state": "deleted", "reason": reason,
                                  "deleted_at": utcnow().isoformat()})

        await asyncio.to_thread(wipe)
        logger.info("session %s: recording deleted (%s)", session.session_id, reason)
        self._emit(session.session_id, "deleted", reason=reason)


def _segments(folder: Path) -> list[Path]:
    """``recording.part-N.mp4`` files (from runtime agent restarts), in order."""
    parts = [(int(p.stem.rsplit("-", 1)[1]), p) for p in folder.glob("recording.part-*.mp4")
             if p.stem.rsplit("-", 1)[1].isdigit()]
    return [p for _, p in sorted(parts)]


def _seen_in_history(events: list[dict[str, Any]]) -> str:
    """The monitor's state for a session, from the ``recording`` events already emitted."""
    last = [e.get("status") for e in events if e.get("type") == "recording"]
    if not last:
        return ""
    return {"started": "recording", "stopped": "stopped", "finalised": "final",
            "finalise_failed": "final", "deleted": "final"}.get(str(last[-1]), "")


def _write_chapters(folder: Path, chapters: list[dict[str, Any]]) -> None:
    _write_file(folder, "chapters.vtt", chapters_vtt(chapters))
    _write_file(folder, "chapters.json", json.dumps({"chapters": chapters}))


async def _run_tool(argv: list[str], timeout: float) -> tuple[bool, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        return False, str(e)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"{argv[0]} timed out"
    if proc.returncode != 0:
        return False, err.decode(errors="replace")[-400:].strip()
    return True, out.decode(errors="replace")


async def probe_duration(path: Path) -> float | None:
    ok, out = await _run_tool(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                               "-of", "default=noprint_wrappers=1:nokey=1", str(path)], 60)
    try:
        return round(float(out.strip()), 3) if ok else None
    except ValueError:
        return None


# --------------------------------------------------------------- handlers

RECORDINGS = web.AppKey("recordings", RecordingService)


def _recording_session(request: web.Request) -> tuple[Session, Path]:
    manager = request.app[MANAGER]
    session = manager.get(request.match_info["session_id"])
    request.app[AUTH].session(request, session)
    if not session.spec.enable_recording:
        raise not_found(f"recording is off for session {session.session_id}")
    return session, recording_dir(manager, session)


async def get_recording(request: web.Request) -> web.StreamResponse:
    session, folder = _recording_session(request)
    try:
        fd = await asyncio.to_thread(
            os.open, folder / RECORDING_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        state = await asyncio.to_thread(_read_state, folder)
        if state.get("state") == "deleted":
            raise not_found(f"the recording of session {session.session_id} was deleted "
                            f"({state.get('reason')})") from None
        raise not_found(f"session {session.session_id} has no recording yet") from None
    return await send_fd(request, fd, "video/mp4", {"Cache-Control": "no-store"})


async def get_chapters(request: web.Request) -> web.Response:
    session, folder = _recording_session(request)
    fmt = request.query.get("format", "vtt")
    if fmt not in ("vtt", "json"):
        raise ValidationProblem([FieldError("format", f"must be 'vtt' or 'json', got {fmt!r}")])
    state = await asyncio.to_thread(_read_state, folder)
    if state.get("state") in (None, "deleted"):
        raise not_found(f"session {session.session_id} has no recording")
    chapters = await request.app[RECORDINGS].chapters(session)
    if fmt == "json":
        return web.json_response({"started_at": state.get("started_at"), "chapters": chapters},
                                 headers={"Cache-Control": "no-store"})
    return web.Response(text=chapters_vtt(chapters), content_type="text/vtt",
                        headers={"Cache-Control": "no-store"})


def setup_routes(app: web.Application) -> None:
    """Add this feature's routes and its background service to the gateway app."""
    base = "/api/visual-sessions/{session_id}/recording"
    app.router.add_get(base, get_recording)
    app.router.add_get(base + "/chapters", get_chapters)

    async def service(app: web.Application) -> AsyncIterator[None]:
        # Runs after the app's own lifecycle context, so the manager exists.
        recordings = RecordingService(app[CONFIG], app[MANAGER])
        app[RECORDINGS] = recordings
        await recordings.start()
        try:
            yield
        finally:
            await recordings.aclose()

    app.cleanup_ctx.append(service)
