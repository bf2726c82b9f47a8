"""Deeply nested JSON bodies are a 400 problem, never a 500 (issue 20, low).

Nesting past Python's recursion limit made ``json.loads`` raise
RecursionError, which the problem middleware answered as an internal error.
Bodies are now refused past 32 levels (no API body needs more) whether or
not the parser itself gives up, and nothing is created.
"""

from __future__ import annotations

import pytest

from tests.gateway_fixtures import Gateway

pytestmark = pytest.mark.timeout(120)
BODIES = {
    "objects x5000": '{"a":' * 5000 + "1" + "}" * 5000,
    "lists x3000 in a field": '{"resolution":' + "[" * 3000 + "]" * 3000 + "}",
    "lists x40 in a field": '{"start_url":' + "[" * 40 + "]" * 40 + "}",
}


async def test_nested_bodies_are_refused(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create(resolution="640x480", enable_recording=False)
    sid = session["session_id"]
    for path in ("/api/visual-sessions", f"/api/visual-sessions/{sid}/control",
                 f"/api/visual-sessions/{sid}/actions"):
        for name, body in BODIES.items():
            async with gw.http.post(gw.url(path), data=body, headers={
                    **gw.auth, "Content-Type": "application/json"}) as resp:
                problem = await resp.json(content_type=None)
                assert resp.status == 400, (path, name, resp.status, problem)
                assert resp.content_type == "application/problem+json"
                assert "nested deeper than 32" in problem["detail"], problem
    async with gw.http.get(gw.url("/api/visual-sessions"), headers=gw.auth) as resp:
        listed = await resp.json()
    sessions = listed["sessions"] if isinstance(listed, dict) else listed
    assert [s["session_id"] for s in sessions] == [sid]
    await gw.stop(sid)
