"""The MCP server with the official MCP Python SDK client: streamable HTTP at /mcp and stdio.

Real parts: the in-process gateway (local backend, light sessions), the SDK's
own client over HTTP, and ``visual-runtime mcp`` as a subprocess for stdio. The
effects are read on the session's X server and in its screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.actions.helpers import control, png_rgb
from tests.dialects.helpers import pointer, session_display
from tests.gateway_fixtures import Gateway
from wire.scaling import Scale

TOOLS = {"create_session", "list_sessions", "get_session", "stop_session", "computer",
         "viewer_link", "wait_for_control"}


@contextlib.asynccontextmanager
async def _client(gw: Gateway, token: str | None) -> AsyncIterator[Client]:
    """The SDK's client over streamable HTTP, with *token* as its bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers,
                                  timeout=httpx2.Timeout(60, read=120)) as http:
        async with Client(streamable_http_client(gw.url("/mcp"), http_client=http)) as mcp:
            yield mcp


def _json(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def test_mcp_over_streamable_http(light_gateway: Gateway) -> None:
    gw = light_gateway
    async with _client(gw, gw.token) as mcp:
        tools = await mcp.list_tools()
        assert {t.name for t in tools.tools} == TOOLS
        computer = next(t for t in tools.tools if t.name == "computer")
        assert "zoom" in json.dumps(computer.input_schema)

        created = _json(await mcp.call_tool("create_session", {
            "resolution": "1024x768", "agent_resolution": "800x600"}))
        sid = created["session_id"]
        assert created["status"] == "running" and created["agent_resolution"] == "800x600"
        assert created["viewer_url"].startswith(gw.base_url + f"/sessions/{sid}/?token=")
        assert [s["session_id"] for s in _json(await mcp.call_tool("list_sessions", {}))] == [sid]

        disp = session_display(gw, sid)
        try:
            clicked = _json(await mcp.call_tool("computer", {
                "session_id": sid, "action": "left_click", "coordinate": [400, 300]}))
            assert clicked["cursor"] == [400, 300]
            assert pointer(disp) == Scale(800, 600, 1024, 768).point_to_screen(400, 300)
        finally:
            disp.close()

        shot = await mcp.call_tool("computer", {"session_id": sid, "action": "screenshot"})
        assert not shot.is_error
        image = shot.content[0]
        assert image.type == "image" and image.mime_type == "image/png"
        pixels = png_rgb(base64.b64decode(image.data))
        assert pixels.shape == (600, 800, 3)
        async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                               headers=gw.auth) as resp:
            api_pixels = png_rgb(await resp.read())
        assert abs(pixels.astype(int) - api_pixels.astype(int)).mean() < 3
        zoom = await mcp.call_tool("computer", {"session_id": sid, "action": "zoom",
                                                "region": [0, 0, 400, 300]})
        assert png_rgb(base64.b64decode(zoom.content[0].data)).shape == (600, 800, 3)
        where = await mcp.call_tool("computer", {"session_id": sid, "action": "cursor_position"})
        assert where.content[0].text == "X=400,Y=300"

        link = (await mcp.call_tool("viewer_link", {"session_id": sid, "kind": "view"}))
        url = link.content[0].text
        assert url.startswith(gw.base_url + f"/sessions/{sid}/?token=")
        async with gw.http.get(url) as resp:
            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]

        # a human takes control: the computer tool fails with the API's meaning
        token = created["viewer_url"].split("token=")[1]  # the session's control token
        status, _ = await control(gw, sid, "take", token)
        assert status == 200
        refused = await mcp.call_tool("computer", {"session_id": sid, "action": "left_click",
                                                   "coordinate": [10, 10]})
        assert refused.is_error
        assert "human-in-control (409): a human holds control" in refused.content[0].text
        bad = await mcp.call_tool("computer", {"session_id": sid, "action": "mouse_move",
                                               "coordinate": [800, 0]})
        assert bad.is_error and "validation-error (422)" in bad.content[0].text
        assert "coordinate" in bad.content[0].text

        # wait_for_control returns once the human hands control back
        waiting = asyncio.ensure_future(mcp.call_tool("wait_for_control",
                                                      {"session_id": sid, "timeout_s": 60}))
        await asyncio.sleep(1.0)
        assert not waiting.done()
        await control(gw, sid, "release", token)
        assert _json(await asyncio.wait_for(waiting, 30))["controller"] == "agent"

        stopped = _json(await mcp.call_tool("stop_session", {"session_id": sid}))
        assert stopped["session_id"] == sid
        await gw.wait_status(sid, {"stopped"})
        missing = await mcp.call_tool("get_session", {"session_id": "nope"})
        assert missing.is_error and "not-found (404)" in missing.content[0].text


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_mcp_refuses_without_the_api_token(light_gateway: Gateway, token: str | None) -> None:
    gw = light_gateway
    # the SDK reports the refused HTTP exchange as an MCP error (inside its task groups)
    with pytest.raises(BaseExceptionGroup) as e:
        async with _client(gw, token) as mcp:
            await mcp.list_tools()
    assert e.group_contains(MCPError, depth=None)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with gw.http.post(gw.url("/mcp"), json=body, headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["type"].endswith("/unauthorized")
    async with gw.http.get(gw.url("/api/visual-sessions"), headers=gw.auth) as resp:
        assert (await resp.json())["sessions"] == []


async def test_mcp_over_stdio(light_gateway: Gateway) -> None:
    gw = light_gateway
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "gateway", "mcp", "--url", gw.base_url, "--token", gw.token])
    async with Client(params) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        created = _json(await mcp.call_tool("create_session", {"resolution": "1024x768"}))
        sid = created["session_id"]
        moved = _json(await mcp.call_tool("computer", {"session_id": sid, "action": "mouse_move",
                                                        "coordinate": [123, 45]}))
        assert moved["cursor"] == [123, 45]
        shot = await mcp.call_tool("computer", {"session_id": sid, "action": "screenshot"})
        assert png_rgb(base64.b64decode(shot.content[0].data)).shape == (768, 1024, 3)
        _json(await mcp.call_tool("stop_session", {"session_id": sid}))
    await gw.wait_status(sid, {"stopped"})
