"""File transfer on the real parts: a light gateway, the session's real shared folder."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from gateway.appkeys import MANAGER
from gateway.backends.session_disk import upload_staging_dir
from tests.gateway_fixtures import Gateway, in_process_gateway
from tests.recording.helpers import events_of

SCANNER = "sh -c 'if grep -q EVIL-SIGNATURE \"$1\"; then exit 1; fi' scan {path}"


@pytest.fixture
async def files_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), max_upload_mb=55,
                                       upload_scan_command=SCANNER):
        yield gw


def _raw(gw: Gateway, sid: str, raw_path: str) -> URL:
    """A files URL with *raw_path* sent exactly as written (no client normalisation)."""
    return URL(gw.url(f"/api/visual-sessions/{sid}/files/") + raw_path, encoded=True)


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.timeout(150)
async def test_files_round_trip_and_rejections(files_gateway: Gateway, tmp_path: Path) -> None:
    gw = files_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    base = gw.url(f"/api/visual-sessions/{sid}/files")
    manager = gw.extra["app"][MANAGER]
    shared = manager.files_dir(manager.get(sid))
    control = {"Authorization": f"Bearer {session['tokens']['control']}"}
    view = {"Authorization": f"Bearer {session['tokens']['view']}"}

    async with gw.http.get(base, headers=gw.auth) as resp:
        assert resp.status == 200 and await resp.json() == {"files": []}

    # 50 MB round trip, byte exact, into a new subfolder, owned by the session user.
    payload = os.urandom(50 * 1024 * 1024)
    async with gw.http.put(base + "/in/big.bin", data=io.BytesIO(payload),
                           headers=control) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["size"] == len(payload)
    st = (shared / "in" / "big.bin").stat()
    assert st.st_uid == manager.get(sid).pod["uid_app"]
    assert (shared / "in").stat().st_uid == manager.get(sid).pod["uid_app"]
    digest = hashlib.sha256()
    async with gw.http.get(base + "/in/big.bin", headers=gw.auth) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(1 << 20):
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(payload).digest()
    async with gw.http.get(base + "/in/big.bin",
                           headers={**gw.auth, "Range": "bytes=1000-1999"}) as resp:
        assert resp.status == 206 and await resp.read() == payload[1000:2000]
    del payload

    async with gw.http.put(base + "/notes.txt", data=b"hello", headers=gw.auth) as resp:
        assert resp.status == 201
    async with gw.http.put(base + "/notes.txt", data=b"hello again", headers=gw.auth) as resp:
        assert resp.status == 200  # replaced
    async with gw.http.get(base, headers=control) as resp:
        listed = {f["path"]: f for f in (await resp.json())["files"]}
    assert set(listed) == {"in/big.bin", "notes.txt"}
    assert listed["notes.txt"]["size"] == 11 and listed["notes.txt"]["modified"].endswith("Z")

    # Rejections change nothing.
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, shared / "link")
    os.symlink(outside / "secret.txt", shared / "secret-link")
    (outside / "secret.txt").write_text("do not leak")
    before = _tree(shared)
    for raw in ("..%2F..%2Fescape.txt", "../escape.txt", "a/../../escape.txt", "%2Fetc%2Fescape",
                "/tmp/escape.txt", "./x", "a//b", "link/evil.txt", "bad%00name"):
        async with gw.http.put(_raw(gw, sid, raw), data=b"x", headers=gw.auth) as resp:
            assert resp.status in (400, 404), (raw, resp.status)
            if resp.status == 404:  # a route mismatch (e.g. an empty path) is fine too
                assert raw.startswith("/")
            assert resp.content_type == "application/problem+json"
    for raw in ("link/secret.txt", "secret-link", "..%2Foutside%2Fsecret.txt"):
        async with gw.http.get(_raw(gw, sid, raw), headers=gw.auth) as resp:
            assert resp.status == 400, (raw, resp.status)
    assert os.listdir(outside) == ["secret.txt"]
    assert not (gw.state_dir / "sessions" / sid / "escape.txt").exists()

    async with gw.http.put(base + "/too-big.bin", data=io.BytesIO(bytes(56 << 20)),
                           headers=gw.auth) as resp:
        assert resp.status == 413
        assert resp.content_type == "application/problem+json"
    async with gw.http.put(base + "/viewer.txt", data=b"x", headers=view) as resp:
        assert resp.status == 403
    async with gw.http.get(base, headers=view) as resp:
        assert resp.status == 403
    async with gw.http.get(base + "/missing.txt", headers=gw.auth) as resp:
        assert resp.status == 404

    # The scanner: a refused upload goes to quarantine, not into the shared folder.
    async with gw.http.put(base + "/eicar.txt", data=b"xx EVIL-SIGNATURE xx",
                           headers=gw.auth) as resp:
        assert resp.status == 422
        assert (await resp.json())["type"].endswith("/upload-quarantined")
    quarantine = gw.state_dir / "sessions" / sid / "quarantine"
    assert [p.name.endswith("-eicar.txt") for p in quarantine.iterdir()] == [True]
    assert _tree(shared) == before
    assert not any(upload_staging_dir(gw.state_dir / "sessions" / sid).iterdir())

    statuses = [(e["direction"], e["path"], e["status"]) for e in await events_of(gw, sid, "file")]
    assert ("upload", "in/big.bin", "stored") in statuses
    assert ("download", "in/big.bin", "sent") in statuses
    assert ("upload", "eicar.txt", "quarantined") in statuses

    # After the end: downloads (API token) yes, uploads 409.
    await gw.stop(sid)
    async with gw.http.get(base + "/notes.txt", headers=gw.auth) as resp:
        assert resp.status == 200 and await resp.read() == b"hello again"
    async with gw.http.put(base + "/late.txt", data=b"x", headers=gw.auth) as resp:
        assert resp.status == 409
    assert not (shared / "late.txt").exists()


@pytest.mark.timeout(90)
async def test_file_transfer_off_is_404(files_gateway: Gateway) -> None:
    gw = files_gateway
    session = await gw.create_running(resolution="640x480", enable_file_transfer=False)
    sid = session["session_id"]
    base = gw.url(f"/api/visual-sessions/{sid}/files")
    async with gw.http.get(base, headers=gw.auth) as resp:
        assert resp.status == 404
    async with gw.http.put(base + "/a.txt", data=b"x", headers=gw.auth) as resp:
        assert resp.status == 404
    shared = gw.extra["app"][MANAGER].files_dir(gw.extra["app"][MANAGER].get(sid))
    assert not (shared / "a.txt").exists()
