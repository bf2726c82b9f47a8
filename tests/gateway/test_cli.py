"""The ``visual-runtime`` commands that talk to a running gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_binary
from tests.gateway_fixtures import API_TOKEN


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--url", url,
                           "--token", API_TOKEN], capture_output=True, text=True, timeout=60)


def test_sessions_logs_and_recording_commands(
        served_gateway: tuple[subprocess.Popen[bytes], str, Path], tmp_path: Path) -> None:
    _, url, _ = served_gateway
    created = _cli(url, "sessions", "create", "--resolution", "800x600", "--wait",
                   "--json")
    assert created.returncode == 0, created.stderr
    session = json.loads(created.stdout)
    sid = session["session_id"]
    assert session["status"] == "running"
    assert set(session["tokens"]) == {"view", "control"}

    got = _cli(url, "sessions", "get", sid, "--json")
    assert json.loads(got.stdout)["resolution"] == "800x600"
    listed = _cli(url, "sessions", "list")
    assert sid in listed.stdout

    stopped = _cli(url, "sessions", "stop", sid, "--json")
    assert json.loads(stopped.stdout)["status"] == "stopped"

    logs = _cli(url, "logs", sid)
    assert logs.returncode == 0
    types = [json.loads(line)["type"] for line in logs.stdout.splitlines() if line.strip()]
    assert "status" in types

    out = tmp_path / "rec.mp4"
    rec = _cli(url, "recording", sid, "-o", str(out), "--json")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert json.loads(rec.stdout)["bytes"] == out.stat().st_size > 0
    probe = subprocess.run([require_binary("ffprobe"), "-v", "error", "-select_streams", "v:0",
                            "-show_entries", "stream=codec_name,width,height", "-of", "json",
                            str(out)], capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 800, 600)

    # Errors are reported with a non-zero status and the problem document.
    missing = _cli(url, "sessions", "get", "no-such-session", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["status"] == 404
    bad = _cli(url, "recording", "no-such-session", "-o", str(tmp_path / "x.mp4"))
    assert bad.returncode == 1 and not (tmp_path / "x.mp4").exists()
