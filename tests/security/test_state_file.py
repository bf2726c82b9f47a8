"""A damaged state dir at start-up: a clear error, exit status 2, nothing changed.

A real state dir is made once by ``visual-runtime serve`` (one session that
ran, recorded and stopped). Each test copies it, damages one file, runs
``visual-runtime serve`` on it and checks the message (names the file, says
what to do), the exit status and that every file of the state dir — the
damaged one included — is byte-identical afterwards, with no file added or
removed. The undamaged copy must start and still list its session.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.gateway_fixtures import (
    API_TOKEN,
    start_served_gateway,
    stop_served_gateway,
    wait_no_pod_processes,
)

DB = "sessions.sqlite3"


def snapshot(state: Path) -> dict[str, str]:
    """sha256 of every file under *state* (relative path -> digest; dirs as 'dir')."""
    out: dict[str, str] = {}
    for path in sorted(state.rglob("*")):
        rel = str(path.relative_to(state))
        if path.is_symlink():
            out[rel] = "symlink:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def template_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A state dir with one stopped session (its logs, recording) and the API token file."""
    state = tmp_path_factory.mktemp("state-template") / "state"
    proc, url = start_served_gateway(state, "--apps", "xterm")
    try:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        created = requests.post(f"{url}/api/visual-sessions", json={"resolution": "640x480"},
                                headers=auth, timeout=30)
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        running = requests.get(f"{url}/api/visual-sessions/{sid}?wait=running", headers=auth,
                               timeout=60)
        assert running.json()["status"] == "running", running.text
        stopped = requests.post(f"{url}/api/visual-sessions/{sid}/stop", headers=auth, timeout=60)
        assert stopped.status_code == 200, stopped.text
    finally:
        stop_served_gateway(proc)
    assert wait_no_pod_processes(state) == []
    # the API token file as a gateway without --token would have made it
    (state / "api-token").write_text("stored-api-token-0123456789\n")
    (state / "api-token").chmod(0o600)
    assert (state / DB).is_file()
    assert (state / "sessions" / sid / "logs" / "events.ndjson").is_file()
    yield state, sid


def serve(state: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``visual-runtime serve`` on *state* (no --token: the token file is read too)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--state-dir", str(state),
         "--apps", "xterm"],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(len(data) // 3, 200)])


def _zeroed_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)
    path.write_bytes(bytes(data))


def _wrong_schema(path: Path) -> None:
    path.unlink()
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, blob BLOB)")
    con.execute("INSERT INTO sessions(blob) VALUES (x'00ff')")
    con.commit()
    con.close()


def _other_database(path: Path) -> None:
    path.unlink()
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE photos (name TEXT)")
    con.commit()
    con.close()


def _bad_record(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("UPDATE sessions SET record = '{\"spec\": 17'")
    con.commit()
    con.close()


def _record_of_wrong_shape(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("UPDATE sessions SET record = '[1, 2, 3]'")
    con.commit()
    con.close()


DB_DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage bytes": _garbage,
    "truncated": _truncated,
    "zeroed header": _zeroed_header,
    "wrong schema": _wrong_schema,
    "another application's database": _other_database,
    "unparseable record": _bad_record,
    "record of the wrong shape": _record_of_wrong_shape,
}


def _copy(template: Path, tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(template, state, symlinks=True)
    # the template was checkpointed on shutdown; no stale WAL files to confuse the copy
    return state


@pytest.mark.parametrize("damage", list(DB_DAMAGE))
def test_damaged_database_stops_start_up_and_changes_nothing(
        template_state: tuple[Path, str], tmp_path: Path, damage: str) -> None:
    template, _ = template_state
    state = _copy(template, tmp_path)
    DB_DAMAGE[damage](state / DB)
    for leftover in ("-wal", "-shm", "-journal"):
        (state / (DB + leftover)).unlink(missing_ok=True)
    before = snapshot(state)
    result = serve(state)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    message = result.stderr
    assert str(state / DB) in message, message
    assert "Nothing was changed" in message and "mv " in message, message
    assert "Traceback" not in message, message
    assert "listening on" not in result.stdout
    assert snapshot(state) == before


@pytest.mark.parametrize("damage", ["binary", "two words", "a directory"])
def test_damaged_api_token_file_stops_start_up(
        template_state: tuple[Path, str], tmp_path: Path, damage: str) -> None:
    template, _ = template_state
    state = _copy(template, tmp_path)
    token_file = state / "api-token"
    if damage == "binary":
        token_file.write_bytes(b"\x00\xff\xfe garbage \x80")
    elif damage == "two words":
        token_file.write_text("two words\n")
    else:
        token_file.unlink()
        token_file.mkdir()
    before = snapshot(state)
    result = serve(state)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert str(token_file) in result.stderr, result.stderr
    assert "Nothing was changed" in result.stderr and "--token" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert snapshot(state) == before


def test_healthy_state_dir_starts_and_keeps_its_session(
        template_state: tuple[Path, str], tmp_path: Path) -> None:
    """The checks do not refuse a good database (WAL mode, a stopped session in it)."""
    template, sid = template_state
    state = _copy(template, tmp_path)
    recordings_before = {k: v for k, v in snapshot(state).items() if "/recording" in k}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--state-dir", str(state),
         "--apps", "xterm"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if not line and proc.poll() is not None:
                break
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]
        assert url is not None, "the gateway did not start on a healthy state dir"
        token = (state / "api-token").read_text().strip()
        listed = requests.get(f"{url}/api/visual-sessions",
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert listed.status_code == 200, listed.text
        assert [s["session_id"] for s in listed.json()["sessions"]] == [sid]
    finally:
        stop_served_gateway(proc)
    after = {k: v for k, v in snapshot(state).items() if "/recording" in k}
    assert after == recordings_before
