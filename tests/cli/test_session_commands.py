"""The session commands against a real ``visual-runtime serve``: create, list, open,
logs (and --follow), recording, stop, delete; tables by default, JSON with --json."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.cli.doctor import DoctorOptions, check_port
from tests.cli.helpers import clean_env, run_cli
from tests.conftest import require_binary
from tests.gateway_fixtures import (
    API_TOKEN,
    start_served_gateway,
    stop_served_gateway,
    wait_no_pod_processes,
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``serve`` with fluxbox + xterm sessions: (base URL, state dir)."""
    state = tmp_path / "state"
    proc, url = start_served_gateway(state, "--apps", "fluxbox,xterm")
    try:
        yield url, state
    finally:
        stop_served_gateway(proc)
        assert wait_no_pod_processes(state) == []


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--url", url, "--token", API_TOKEN)


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


async def test_session_commands_round_trip(served: tuple[str, Path], tmp_path: Path) -> None:
    url, state = served
    created = _json(_cli(url, "sessions", "create", "--resolution", "800x600", "--wait",
                         "--json"))
    sid = str(created["session_id"])
    assert created["status"] == "running"
    assert set(created["tokens"]) == {"view", "control"}  # type: ignore[arg-type]

    # The table, found through the state dir alone (URL file written by serve, token file).
    (state / "api-token").write_text(API_TOKEN + "\n")
    assert (state / "gateway-url").read_text().strip() == url
    table = run_cli("sessions", "list", "--state-dir", str(state))
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["SESSION", "STATUS", "RESOLUTION", "BACKEND"]
    row = next(r for r in rows if r.startswith(sid))
    assert row.split()[1:4] == ["running", "800x600", "local"]
    listed = _json(_cli(url, "sessions", "list", "--json"))
    assert [s["session_id"] for s in listed["sessions"]] == [sid]  # type: ignore[attr-defined]
    got = _cli(url, "sessions", "get", sid)
    assert f"session {sid}" in got.stdout and "resolution:           800x600" in got.stdout

    # open: a fresh control link that works (page, and a control-scoped call).
    opened = _cli(url, "sessions", "open", sid, "--no-browser")
    assert opened.returncode == 0, opened.stderr
    link = opened.stdout.strip()
    assert link.startswith(f"{url}/sessions/{sid}/?token=")
    token = link.split("?token=", 1)[1]
    assert token not in created["tokens"].values()  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
        control_url = f"{url}/api/visual-sessions/{sid}/control"
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.post(control_url, json={"action": "take"}, headers=bearer) as resp:
            assert resp.status == 200 and (await resp.json())["controller"] == "human"
        async with http.post(control_url, json={"action": "release"}, headers=bearer) as resp:
            assert resp.status == 200
        view = _json(_cli(url, "sessions", "open", sid, "--view", "--no-browser", "--json"))
        assert view["kind"] == "view" and view["opened"] is False
        async with http.post(control_url, json={"action": "take"},
                             headers={"Authorization": f"Bearer {view['token']}"}) as resp:
            assert resp.status == 403

    # logs: readable lines, and NDJSON whose every line parses.
    logs = _cli(url, "logs", sid)
    assert logs.returncode == 0
    assert any(line.startswith("event |") and "status=running" in line
               for line in logs.stdout.splitlines())
    ndjson = _cli(url, "logs", sid, "--json")
    entries = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert {"status", "token_issued", "log"} <= {e["type"] for e in entries}

    # logs --follow runs until the session ends (output to a file: no pipe buffering).
    follow_out = tmp_path / "follow.ndjson"
    with follow_out.open("w") as sink:
        follow = subprocess.Popen(
            [sys.executable, "-m", "gateway", "logs", sid, "--follow", "--json", "--url", url,
             "--token", API_TOKEN], stdout=sink, stderr=subprocess.PIPE, text=True,
            env=clean_env())
    try:
        # Once it has printed the log so far, it is following.
        deadline = time.monotonic() + 60
        while "\n" not in follow_out.read_text():
            assert follow.poll() is None and time.monotonic() < deadline, follow.stderr
            time.sleep(0.05)
        live = _cli(url, "recording", sid, "-o", str(tmp_path / "live.mp4"), "--progress")
        assert live.returncode == 0, live.stderr
        assert "100.0%" in live.stderr  # the forced bar drew a complete download
        stopped = _json(_cli(url, "sessions", "stop", sid, "--json"))
        assert stopped["status"] == "stopped"
        _, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, err
    followed = [json.loads(line) for line in follow_out.read_text().splitlines()]
    statuses = [e.get("status") for e in followed if e["type"] == "status"]
    assert statuses[-1] == "stopped" and "stopping" in statuses
    ids = [e["id"] for e in followed if "id" in e]
    assert ids == sorted(set(ids)), "every event printed once, in order"

    # The recording: a plain progress line (stderr is not a terminal) and an H.264 MP4.
    out_file = tmp_path / "rec.mp4"
    rec = _cli(url, "recording", sid, "-o", str(out_file), "--json")
    saved = _json(rec)
    assert saved["bytes"] == out_file.stat().st_size > 0
    assert f"recording {sid} (" in rec.stderr and "[#" not in rec.stderr
    probe = subprocess.run([require_binary("ffprobe"), "-v", "error", "-select_streams", "v:0",
                            "-show_entries", "stream=codec_name,width,height", "-of", "json",
                            str(out_file)], capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 800, 600)

    # A running gateway holds the port: doctor says whose it is.
    port = int(url.rsplit(":", 1)[1])
    held = check_port(DoctorOptions(port=port))
    assert held.ok and "running Visual Runtime gateway" in held.detail

    deleted = _json(_cli(url, "sessions", "delete", sid, "--json"))
    assert deleted == {"session_id": sid, "deleted": True}
    assert _json(_cli(url, "sessions", "list", "--json")) == {"sessions": []}


def test_errors_are_reported(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    missing = _cli(url, "sessions", "get", "no-such-session", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["status"] == 404
    text = _cli(url, "sessions", "stop", "no-such-session")
    assert text.returncode == 1 and text.stderr.startswith("error: 404 ")
    invalid = _cli(url, "sessions", "create", "--resolution", "7x7", "--json")
    assert invalid.returncode == 1
    assert json.loads(invalid.stdout)["errors"][0]["field"] == "resolution"
    bad = _cli(url, "recording", "no-such-session", "-o", str(tmp_path / "x.mp4"))
    assert bad.returncode == 1
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.mp4.part").exists()

    # No gateway there: a hint at healthz and doctor, exit 1; JSON still parses.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = run_cli("sessions", "list", "--url", dead, "--token", API_TOKEN)
    assert down.returncode == 1
    assert "cannot reach the gateway" in down.stderr and "visual-runtime doctor" in down.stderr
    down_json = run_cli("sessions", "list", "--url", dead, "--token", API_TOKEN, "--json")
    assert json.loads(down_json.stdout)["title"] == "Gateway unreachable"

    # No token anywhere: usage error, exit 2, nothing sent.
    no_token = run_cli("sessions", "list", "--url", url, "--state-dir", str(tmp_path / "none"))
    assert no_token.returncode == 2 and "no API token" in no_token.stderr


def test_create_shows_progress_and_links(served: tuple[str, Path]) -> None:
    url, _ = served
    result = _cli(url, "sessions", "create", "--resolution", "640x480", "--wait",
                  "--no-recording", "--progress")
    assert result.returncode == 0, result.stderr
    # The forced bar: a spinner with the state and the elapsed time, then the outcome.
    assert re.search(r"session \S+ [|/\\-] starting \d+\.\d s", result.stderr), result.stderr
    assert "running after" in result.stderr
    lines = result.stdout.splitlines()
    sid = lines[0].split()[1]
    assert "  status:               running" in lines
    assert any(line.startswith("  viewer (control):     " + f"{url}/sessions/{sid}/?token=")
               for line in lines)
    assert any(line.startswith("  viewer (watch only):  ") for line in lines)
    # Ctrl+C ends logs --follow quietly with 130. (SIGINT as a terminal gives it: a
    # shell's background job, e.g. a CI step started with `&`, inherits it ignored.)
    follow = subprocess.Popen(
        [sys.executable, "-m", "gateway", "logs", sid, "--follow", "--url", url,
         "--token", API_TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline().startswith("event | ")
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()  # reaps it and closes the pipes
    assert follow.returncode == 130 and "Traceback" not in err, err

    stop = _cli(url, "sessions", "stop", sid)
    assert stop.stdout.strip() == f"{sid}  stopped (requested)"
