"""The swarm pod's shared-folder server (agent_side/files_server.py) on a real unix
socket, beside the end-to-end check in test_swarm_cluster.py: paths are walked
without following links, ranges, replacing, and only the configured peer uid is
served."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from agent_side.files_server import make_app


async def _serve(root: Path, sock: Path, peer: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(root, peer))
    await runner.setup()
    await web.UnixSite(runner, str(sock)).start()
    return runner


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, aiohttp.ClientSession]]:
    root = tmp_path / "Downloads"
    root.mkdir()
    runner = await _serve(root, tmp_path / "files.sock", os.getuid())
    http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(tmp_path / "files.sock")))
    try:
        yield root, http
    finally:
        await http.close()
        await runner.cleanup()


async def test_upload_list_download_range_and_replace(
        served: tuple[Path, aiohttp.ClientSession]) -> None:
    root, http = served
    async with http.put("http://f/files/a/b.txt", data=b"0123456789") as r:
        assert r.status == 201, await r.text()
    assert (root / "a" / "b.txt").read_bytes() == b"0123456789"
    async with http.put("http://f/files/a/b.txt", data=b"abc") as r:
        assert r.status == 200
    async with http.get("http://f/files") as r:
        files = (await r.json())["files"]
    assert [(f["path"], f["size"]) for f in files] == [("a/b.txt", 3)]
    async with http.get("http://f/files/a/b.txt", headers={"Range": "bytes=1-"}) as r:
        assert r.status == 206 and await r.read() == b"bc"
        assert r.headers["Content-Range"] == "bytes 1-2/3"
        assert r.headers["X-VR-File-Size"] == "3"
    async with http.get("http://f/files/a/b.txt", headers={"Range": "bytes=9-"}) as r:
        assert r.status == 416 and (await r.json())["size"] == 3
    assert not [p for p in (root / "a").iterdir() if p.name.startswith(".vr-upload")]


async def test_links_and_bad_paths_are_refused(served: tuple[Path, aiohttp.ClientSession],
                                               tmp_path: Path) -> None:
    root, http = served
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    (root / "link").symlink_to(outside / "secret")
    (root / "dirlink").symlink_to(outside)
    for path, status in (("link", 400), ("dirlink/secret", 400), ("missing", 404),
                         ("a/../secret", 400)):
        # encoded: the client would otherwise resolve ".." itself
        async with http.get(URL(f"http://f/files/{path}", encoded=True)) as r:
            assert r.status == status, (path, await r.text())
    async with http.put("http://f/files/dirlink/new", data=b"x") as r:
        assert r.status == 400
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


async def test_only_the_peer_uid_is_served(tmp_path: Path) -> None:
    root = tmp_path / "Downloads"
    root.mkdir()
    runner = await _serve(root, tmp_path / "files.sock", os.getuid() + 1)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(
                path=str(tmp_path / "files.sock"))) as http, http.get("http://f/files") as r:
            assert r.status == 403
    finally:
        await runner.cleanup()
