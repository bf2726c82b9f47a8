"""Shared helpers of the recording tests: ffprobe, MP4 boxes, events, activity."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import require_binary
from tests.gateway_fixtures import Gateway


def ffprobe(path: Path) -> dict[str, Any]:
    """Stream and format facts of *path* (fails the test if ffprobe refuses it)."""
    out = subprocess.run(
        [require_binary("ffprobe"), "-v", "error", "-show_entries",
         "stream=codec_name,width,height:format=duration,format_name", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return json.loads(out)


def ffmpeg_decode_errors(path: Path) -> tuple[int, str]:
    """``ffmpeg -v error -i f -enc_time_base -1 -f null -``: (exit code, error output).

    Recordings are variable frame rate on the source's 1/60 s grid. Without
    ``-enc_time_base -1`` the ffmpeg CLI re-times frames to 1/(average frame rate) for its
    null output, and two frames 1/60 s apart in a mostly 20 fps stream land on the same
    tick ("non monotonically increasing dts to muxer"): the CLI's output, not the file. With
    the input's own time base every decoding error still shows."""
    proc = subprocess.run([require_binary("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path),
                           "-enc_time_base", "-1", "-f", "null", "-"],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def top_level_boxes(data: bytes) -> list[str]:
    """Names of the top-level ISO BMFF boxes of *data*, in order."""
    names, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        name = data[offset + 4:offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        if size < 8:
            break
        names.append(name)
        offset += size
    return names


async def events_of(gw: Gateway, sid: str, type_: str) -> list[dict[str, Any]]:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/logs"), headers=gw.auth) as resp:
        assert resp.status == 200
        text = await resp.text()
    return [e for e in (json.loads(line) for line in text.splitlines() if line.strip())
            if e.get("type") == type_]


async def wait_event(gw: Gateway, sid: str, type_: str, timeout: float = 30,
                     **match: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for event in await events_of(gw, sid, type_):
            if all(event.get(k) == v for k, v in match.items()):
                return event
        if time.monotonic() > deadline:
            raise AssertionError(f"no {type_} event matching {match} within {timeout} s")
        await asyncio.sleep(0.1)


async def act(gw: Gateway, sid: str, body: dict[str, Any]) -> None:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"), json=body,
                            headers=gw.auth) as resp:
        data = await resp.json()
        assert resp.status == 200, data


async def type_for(gw: Gateway, sid: str, seconds: float) -> int:
    """Type into the xterm for about *seconds* (activity for the recorder); returns lines."""
    end = time.monotonic() + seconds
    lines = 0
    while time.monotonic() < end:
        await act(gw, sid, {"action": "type", "text": f"echo line {lines}"})
        await act(gw, sid, {"action": "key", "text": "Return"})
        lines += 1
    return lines


async def wait_file(path: Path, predicate: Any, timeout: float = 30) -> bytes:
    """Poll *path* until ``predicate(bytes)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        if predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never satisfied the condition ({len(data)} bytes)")
        await asyncio.sleep(0.1)
