"""``POST /api/visual-sessions/{id}/tokens``: minting view/control tokens (extension)."""

from __future__ import annotations

import json
from typing import Any

from tests.gateway_fixtures import Gateway


async def _mint(gw: Gateway, sid: str, body: Any = None, *, headers: dict[str, str] | None = None,
                data: bytes | None = None) -> tuple[int, dict[str, Any]]:
    kwargs: dict[str, Any] = {"headers": gw.auth if headers is None else headers}
    if data is not None:
        kwargs["data"] = data
    elif body is not None:
        kwargs["json"] = body
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/tokens"), **kwargs) as resp:
        payload = await resp.json(content_type=None)
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json", payload
        return resp.status, payload


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _events(gw: Gateway, sid: str) -> list[str]:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/logs"), headers=gw.auth) as resp:
        text = await resp.text()
    return [json.loads(line)["type"] for line in text.splitlines() if line.strip()]


async def test_minted_tokens_work_like_the_created_ones(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]

    status, control = await _mint(gw, sid)  # empty body: a control token
    assert status == 201, control
    assert control["kind"] == "control" and control["session_id"] == sid
    assert control["viewer_url"] == f"/sessions/{sid}/?token={control['token']}"
    assert control["token"] not in session["tokens"].values()

    async with gw.http.get(gw.url(control["viewer_url"])) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                            json={"action": "take"}, headers=_bearer(control["token"])) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["controller"] == "human"
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                            json={"action": "release"},
                            headers=_bearer(control["token"])) as resp:
        assert resp.status == 200

    status, view = await _mint(gw, sid, {"kind": "view"})
    assert status == 201 and view["kind"] == "view"
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}"),
                           headers=_bearer(view["token"])) as resp:
        assert resp.status == 200
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                            json={"action": "take"}, headers=_bearer(view["token"])) as resp:
        assert resp.status == 403
    # The created tokens still work: nothing was rotated.
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}"),
                           headers=_bearer(session["tokens"]["control"])) as resp:
        assert resp.status == 200
    assert (await _events(gw, sid)).count("token_issued") == 2

    # A minted token is for its own session only.
    other = await gw.create()
    async with gw.http.get(gw.url(f"/api/visual-sessions/{other['session_id']}"),
                           headers=_bearer(control["token"])) as resp:
        assert resp.status == 403

    await gw.stop(sid)
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}"),
                           headers=_bearer(control["token"])) as resp:
        assert resp.status == 401
    status, problem = await _mint(gw, sid)
    assert status == 409 and problem["type"].endswith("/session-not-running")


async def test_bad_mint_requests_change_nothing(light_gateway: Gateway) -> None:
    gw = light_gateway
    created = await gw.create()
    sid = created["session_id"]

    status, problem = await _mint(gw, sid, {"kind": "admin"})
    assert status == 422
    assert problem["errors"][0]["field"] == "kind" and "'admin'" in problem["errors"][0]["message"]
    status, problem = await _mint(gw, sid, {"kind": "view", "ttl": 5})
    assert status == 422 and problem["errors"][0]["field"] == "ttl"
    status, _ = await _mint(gw, sid, data=b"kind=view")
    assert status == 415
    status, _ = await _mint(gw, sid, headers={})
    assert status == 401
    status, _ = await _mint(gw, sid, headers=_bearer(created["tokens"]["control"]))
    assert status == 403
    status, _ = await _mint(gw, "no-such-session")
    assert status == 404
    assert "token_issued" not in await _events(gw, sid)
