"""Bad input: exact bounds, clear RFC 9457 problems, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway_fixtures import Gateway

BASE = "/api/visual-sessions"


async def _post_raw(gw: Gateway, body: bytes, content_type: str | None) -> tuple[int, Any, str]:
    headers = dict(gw.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with gw.http.post(gw.url(BASE), data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.content_type


async def _session_count(gw: Gateway) -> int:
    async with gw.http.get(gw.url(BASE), headers=gw.auth) as resp:
        assert resp.status == 200
        return len((await resp.json())["sessions"])


def _assert_problem(status: int, body: Any, ctype: str, expected: int) -> None:
    assert status == expected, body
    assert ctype == "application/problem+json"
    assert body["status"] == expected
    assert body["type"].startswith("https://")
    assert body["title"] and body["detail"]
    assert "Traceback" not in str(body)


INVALID_FIELDS = [
    ({"resolution": "1600x901"}, "resolution"),
    ({"resolution": "318x240"}, "resolution"),
    ({"resolution": "3842x900"}, "resolution"),
    ({"resolution": "1600x238"}, "resolution"),
    ({"resolution": "1600x2162"}, "resolution"),
    ({"resolution": "1600*900"}, "resolution"),
    ({"resolution": 1600}, "resolution"),
    ({"timeout_minutes": 0}, "timeout_minutes"),
    ({"timeout_minutes": 1441}, "timeout_minutes"),
    ({"timeout_minutes": "60"}, "timeout_minutes"),
    ({"timeout_minutes": 1.5}, "timeout_minutes"),
    ({"timeout_minutes": True}, "timeout_minutes"),
    ({"idle_timeout_minutes": -1}, "idle_timeout_minutes"),
    ({"idle_timeout_minutes": 1441}, "idle_timeout_minutes"),
    ({"enable_recording": "yes"}, "enable_recording"),
    ({"enable_file_transfer": 1}, "enable_file_transfer"),
    ({"network": "host"}, "network"),
    ({"network": None}, "network"),
    ({"start_url": "ftp://example.com/"}, "start_url"),
    ({"start_url": "javascript:alert(1)"}, "start_url"),
    ({"start_url": "http://"}, "start_url"),
    ({"start_url": 42}, "start_url"),
    ({"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_FIELDS)
async def test_invalid_field_gives_422_naming_it(light_gateway: Gateway, body: dict[str, Any],
                                                 field: str) -> None:
    gw = light_gateway
    async with gw.http.post(gw.url(BASE), json=body, headers=gw.auth) as resp:
        data = await resp.json(content_type=None)
        _assert_problem(resp.status, data, resp.content_type, 422)
    assert [e["field"] for e in data["errors"]] == [field]
    assert await _session_count(gw) == 0


async def test_every_bad_field_is_reported_at_once(light_gateway: Gateway) -> None:
    gw = light_gateway
    body = {"resolution": "1x1", "timeout_minutes": 0, "network": "x", "extra": 1}
    async with gw.http.post(gw.url(BASE), json=body, headers=gw.auth) as resp:
        data = await resp.json(content_type=None)
    assert resp.status == 422
    assert {e["field"] for e in data["errors"]} == {"resolution", "timeout_minutes", "network",
                                                    "extra"}


@pytest.mark.parametrize("value", ["320x240", "3840x2160", "1600x900"])
async def test_resolution_bounds_are_inclusive(light_gateway: Gateway, value: str) -> None:
    # Validation only: stop at once so a 4K desktop is not left running.
    gw = light_gateway
    created = await gw.create(resolution=value, idle_timeout_minutes=0, timeout_minutes=1440)
    assert created["resolution"] == value
    assert created["timeout_minutes"] == 1440
    await gw.stop(created["session_id"])


async def test_malformed_json_is_400(light_gateway: Gateway) -> None:
    status, body, ctype = await _post_raw(light_gateway, b'{"resolution": ', "application/json")
    _assert_problem(status, body, ctype, 400)
    status, body, ctype = await _post_raw(light_gateway, b"[1, 2]", "application/json")
    _assert_problem(status, body, ctype, 400)
    assert await _session_count(light_gateway) == 0


async def test_wrong_content_type_is_415(light_gateway: Gateway) -> None:
    status, body, ctype = await _post_raw(light_gateway, b"resolution=1600x900",
                                          "application/x-www-form-urlencoded")
    _assert_problem(status, body, ctype, 415)
    assert await _session_count(light_gateway) == 0


async def test_unknown_session_is_404(light_gateway: Gateway) -> None:
    gw = light_gateway
    for method, path in [("GET", "/nope"), ("POST", "/nope/stop"), ("DELETE", "/nope"),
                         ("GET", "/nope/control"), ("POST", "/nope/actions")]:
        async with gw.http.request(method, gw.url(BASE + path), headers=gw.auth,
                                   json={"action": "screenshot"}) as resp:
            data = await resp.json(content_type=None)
            _assert_problem(resp.status, data, resp.content_type, 404)


async def test_missing_or_wrong_token_is_401(light_gateway: Gateway) -> None:
    gw = light_gateway
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        async with gw.http.post(gw.url(BASE), json={}, headers=headers) as resp:
            data = await resp.json(content_type=None)
            _assert_problem(resp.status, data, resp.content_type, 401)
        async with gw.http.get(gw.url(BASE), headers=headers) as resp:
            _assert_problem(resp.status, await resp.json(content_type=None), resp.content_type,
                            401)
    assert await _session_count(gw) == 0


async def test_unknown_route_and_method_are_problems(light_gateway: Gateway) -> None:
    gw = light_gateway
    async with gw.http.get(gw.url("/api/nothing-here"), headers=gw.auth) as resp:
        _assert_problem(resp.status, await resp.json(content_type=None), resp.content_type, 404)
    async with gw.http.put(gw.url(BASE), headers=gw.auth) as resp:
        _assert_problem(resp.status, await resp.json(content_type=None), resp.content_type, 405)


async def test_healthz_openapi_and_metrics(light_gateway: Gateway) -> None:
    gw = light_gateway
    async with gw.http.get(gw.url("/healthz")) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    async with gw.http.get(gw.url("/api/openapi.json")) as resp:
        spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    for path in (BASE, BASE + "/{session_id}", BASE + "/{session_id}/stop",
                 BASE + "/{session_id}/whep", BASE + "/{session_id}/actions"):
        assert path in spec["paths"]
    async with gw.http.get(gw.url("/metrics")) as resp:
        text = await resp.text()
    assert 'visual_runtime_sessions{status="running"} 0' in text
    assert "visual_runtime_frames_encoded_total" in text
