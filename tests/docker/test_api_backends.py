"""The session API behaves the same on the ``local`` and the ``docker`` backend."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_fixtures import Gateway, in_process_gateway


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(params=["local", "docker"])
async def any_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    """An in-process gateway on each backend (fluxbox + xterm: the API, not the apps)."""
    if request.param == "docker":
        request.getfixturevalue("docker_client")  # fails without an engine or image
    async for gw in in_process_gateway(tmp_path, backend=request.param,
                                       apps=("fluxbox", "xterm")):
        gw.extra["backend"] = request.param
        yield gw


async def test_session_api(any_gateway: Gateway) -> None:
    gw = any_gateway
    session = await gw.create_running(resolution="1024x768", network="none")
    sid = session["session_id"]
    assert session["backend"] == gw.extra["backend"]
    assert session["resolution"] == "1024x768"
    base = gw.url(f"/api/visual-sessions/{sid}")

    async with gw.http.get(base + "/screenshot", headers=gw.auth) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert png_size(await resp.read()) == (1024, 768)

    async with gw.http.post(base + "/actions", headers=gw.auth,
                            json={"action": "mouse_move", "coordinate": [100, 200]}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["cursor"] == [100, 200]
    async with gw.http.post(base + "/actions", headers=gw.auth,
                            json={"action": "screenshot"}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert png_size(base64.b64decode(body["base64_image"])) == (1024, 768)
    async with gw.http.post(base + "/actions", headers=gw.auth,
                            json={"action": "mouse_move", "coordinate": [5000, 1]}) as resp:
        assert resp.status == 422
        assert resp.content_type == "application/problem+json"

    # Files: the shared folder is the same host folder on both backends.
    async with gw.http.put(base + "/files/hello.txt", data=b"hello docker",
                           headers=gw.auth) as resp:
        assert resp.status in (200, 201), await resp.text()
    async with gw.http.get(base + "/files", headers=gw.auth) as resp:
        listing = await resp.json()
        assert [f["path"] for f in listing["files"]] == ["hello.txt"], listing
    async with gw.http.get(base + "/files/hello.txt", headers=gw.auth) as resp:
        assert await resp.read() == b"hello docker"
    async with gw.http.get(base + "/files/..%2F..%2Fapi-token", headers=gw.auth) as resp:
        assert resp.status in (400, 404)

    async with gw.http.post(base + "/control", headers=gw.auth,
                            json={"action": "take"}) as resp:
        assert (await resp.json())["controller"] == "human"
    async with gw.http.post(base + "/actions", headers=gw.auth,
                            json={"action": "mouse_move", "coordinate": [1, 1]}) as resp:
        assert resp.status == 409
    async with gw.http.post(base + "/control", headers=gw.auth,
                            json={"action": "release"}) as resp:
        assert (await resp.json())["controller"] == "agent"

    stopped = await gw.stop(sid)
    assert stopped["status"] in ("stopping", "stopped")
    ended = await gw.wait_status(sid, {"stopped"})
    assert ended["stop_reason"] == "requested"
    async with gw.http.post(base + "/actions", headers=gw.auth,
                            json={"action": "cursor_position"}) as resp:
        assert resp.status == 409
    async with gw.http.get(base + "/logs", headers=gw.auth) as resp:
        assert resp.status == 200
        assert b'"status"' in await resp.read()
    async with gw.http.get(base + "/recording", headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.read()
        assert data[4:8] == b"ftyp", data[:16]
