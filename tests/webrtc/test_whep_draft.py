"""WHEP details from the draft: Retry-After on 409 while the session starts,
OPTIONS tells what the endpoint accepts, PATCH is a documented 405."""

from __future__ import annotations

from tests.gateway_fixtures import Gateway
from tests.webrtc.whep_client import WhepViewer


async def test_offer_while_starting_gets_retry_after(light_gateway: Gateway) -> None:
    gw = light_gateway
    created = await gw.create()
    sid = created["session_id"]
    assert created["status"] == "starting"
    url = gw.url(f"/api/visual-sessions/{sid}/whep")
    headers = {"Authorization": f"Bearer {created['tokens']['view']}",
               "Content-Type": "application/sdp"}
    async with gw.http.post(url, data=b"v=0\r\n", headers=headers) as resp:
        assert resp.status == 409
        assert resp.headers["Retry-After"] == "1"
        assert resp.content_type == "application/problem+json"
    async with gw.http.options(url) as resp:
        assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"
    session = await gw.get(sid, wait=True)
    assert session["status"] == "running"
    viewer = WhepViewer(gw, sid, created["tokens"]["view"])
    try:
        await viewer.connect()
        assert viewer.location is not None and viewer.location.startswith(gw.base_url)
        async with gw.http.patch(viewer.location, data=b"a=end-of-candidates\r\n", headers={
                "Authorization": f"Bearer {created['tokens']['view']}",
                "Content-Type": "application/trickle-ice-sdpfrag"}) as resp:
            assert resp.status == 405
            assert "DELETE" in resp.headers["Allow"]
    finally:
        await viewer.close()
        await gw.stop(sid)
