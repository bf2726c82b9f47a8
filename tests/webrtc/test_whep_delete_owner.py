"""Only the token that opened a WHEP peer (or the API token) can end it (issue 20, low).

The WHEP resource's DELETE used to close any peer of the session for any of
its tokens: a view token could cut off the control token's viewer (or
another). With real aiortc viewers through the gateway: the view token's
DELETE of the control viewer's resource is 404 and that viewer keeps its
connection; the control token ends its own; the API token may end any.
"""

from __future__ import annotations

import pytest

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import Gateway
from tests.webrtc.whep_client import WhepViewer

pytestmark = pytest.mark.timeout(180)


async def _delete(gw: Gateway, location: str, token: str) -> int:
    async with gw.http.delete(location, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


async def _peer_count(gw: Gateway, sid: str) -> int:
    manager = gw.extra["app"][MANAGER]
    return len((await manager.agent(manager.get(sid)).stats())["peers"])


async def test_only_the_opening_token_ends_a_peer(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid, tokens = session["session_id"], session["tokens"]
    human = WhepViewer(gw, sid, tokens["control"])
    other = WhepViewer(gw, sid, tokens["view"])
    try:
        await human.connect()
        await other.connect()
        await human.wait_frames(1)
        assert human.location is not None and other.location is not None
        assert await _peer_count(gw, sid) == 2
        # The view token cannot end the control token's peer (nor guess it away).
        assert await _delete(gw, human.location, tokens["view"]) == 404
        assert await _peer_count(gw, sid) == 2
        assert human.pc.connectionState == "connected"
        # The control token cannot end the view token's peer either ...
        assert await _delete(gw, other.location, tokens["control"]) == 404
        # ... but each ends its own, and the API token any.
        assert await _delete(gw, human.location, tokens["control"]) == 204
        assert await _peer_count(gw, sid) == 1
        assert await _delete(gw, other.location, gw.token) == 204
        assert await _peer_count(gw, sid) == 0
    finally:
        await human.close()
        await other.close()
    await gw.stop(sid)
