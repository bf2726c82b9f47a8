"""ETag on downloads (files and recordings share the sender): 304, If-Range, a new tag on change."""

from __future__ import annotations

from tests.gateway_fixtures import Gateway


async def test_etag_if_none_match_and_if_range(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    base = gw.url(f"/api/visual-sessions/{session['session_id']}/files/etag.txt")
    async with gw.http.put(base, data=b"0123456789", headers=gw.auth) as resp:
        assert resp.status == 201
    async with gw.http.get(base, headers=gw.auth) as resp:
        assert resp.status == 200 and await resp.read() == b"0123456789"
        etag = resp.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    async with gw.http.get(base, headers={**gw.auth, "If-None-Match": etag}) as resp:
        assert resp.status == 304 and resp.headers["ETag"] == etag and await resp.read() == b""
    # a part of this version, and of another version (the whole file comes back)
    async with gw.http.get(base, headers={**gw.auth, "Range": "bytes=2-4",
                                          "If-Range": etag}) as resp:
        assert resp.status == 206 and await resp.read() == b"234"
    async with gw.http.get(base, headers={**gw.auth, "Range": "bytes=2-4",
                                          "If-Range": '"0-0"'}) as resp:
        assert resp.status == 200 and await resp.read() == b"0123456789"
    # changed content: a new tag, and the old one no longer matches
    async with gw.http.put(base, data=b"changed!", headers=gw.auth) as resp:
        assert resp.status == 200
    async with gw.http.get(base, headers={**gw.auth, "If-None-Match": etag}) as resp:
        assert resp.status == 200 and await resp.read() == b"changed!"
        assert resp.headers["ETag"] != etag
