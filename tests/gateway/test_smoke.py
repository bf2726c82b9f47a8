"""A first end-to-end check: create -> running -> screenshot -> stop on the real backend."""

from __future__ import annotations

import io

from tests.gateway_fixtures import Gateway


async def test_create_run_screenshot_stop(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="800x600")
    sid = session["session_id"]
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        png = await resp.read()
    # PNG IHDR: width and height as big-endian u32 at bytes 16..24
    buf = io.BytesIO(png)
    assert buf.read(8) == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 800
    assert int.from_bytes(png[20:24], "big") == 600
    stopped = await gw.stop(sid)
    assert stopped["status"] == "stopped"
    assert stopped["stop_reason"] == "requested"
