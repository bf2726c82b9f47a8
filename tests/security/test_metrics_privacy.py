"""``/metrics`` names sessions only for the API token (issue 20, low).

It needs no token (scrapers, the throttle leaves it alone), and it used to list
every session's id in its per-session series; a session id is half of what a
viewer link is made of. Now a request without ``Authorization`` gets the
gateway-wide series only; the API token gets the per-session ones; a session
token is refused.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.gateway_fixtures import Gateway

pytestmark = pytest.mark.timeout(120)


async def test_session_ids_only_for_the_api_token(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    deadline = time.monotonic() + 30
    while True:  # the per-session series appear once the manager has polled the agent
        async with gw.http.get(gw.url("/metrics"), headers=gw.auth) as resp:
            assert resp.status == 200
            full = await resp.text()
        if f'visual_runtime_frames_encoded_total{{session="{sid}"}}' in full:
            break
        assert time.monotonic() < deadline, full
        await asyncio.sleep(0.2)
    async with gw.http.get(gw.url("/metrics")) as resp:
        assert resp.status == 200
        public = await resp.text()
    assert 'visual_runtime_sessions{status="running"} 1' in public
    assert sid not in public and 'session="' not in public, public
    for kind in ("view", "control"):
        async with gw.http.get(gw.url("/metrics"), headers={
                "Authorization": f"Bearer {session['tokens'][kind]}"}) as resp:
            assert resp.status == 403, kind
            assert sid not in await resp.text()
    await gw.stop(sid)
