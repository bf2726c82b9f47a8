"""The MCP server with the official TypeScript SDK client (@modelcontextprotocol/sdk, node).

Each call runs ``node client.mjs`` (tests/mcp/node) against the live in-process
gateway's ``/mcp``: a client nobody here wrote, over streamable HTTP with the
API token. The effects are read on the session's X server.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from tests.actions.helpers import control, png_rgb
from tests.dialects.helpers import pointer, session_display
from tests.gateway_fixtures import Gateway


async def _node(client: Path, gw: Gateway, token: str, steps: list[dict[str, Any]]
                ) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(client), gw.url("/mcp"), token, json.dumps(steps), cwd=client.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert out, f"node printed nothing (exit {proc.returncode}): {err.decode()[-2000:]}"
    document: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return document


def _text(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


async def test_typescript_sdk_client(light_gateway: Gateway, mcp_node_client: Path) -> None:
    gw = light_gateway
    done = await _node(mcp_node_client, gw, gw.token, [
        {"list": True},
        {"tool": "create_session", "args": {"resolution": "1024x768"}}])
    tools, created = done["results"]
    assert set(tools["tools"]) >= {"create_session", "computer", "stop_session", "viewer_link",
                                   "wait_for_control"}
    assert not created.get("isError"), created
    session = json.loads(_text(created))
    sid = session["session_id"]
    assert session["status"] == "running"

    disp = session_display(gw, sid)
    try:
        done = await _node(mcp_node_client, gw, gw.token, [
            {"tool": "computer", "args": {"session_id": sid, "action": "left_click",
                                          "coordinate": [321, 123]}},
            {"tool": "computer", "args": {"session_id": sid, "action": "screenshot"}}])
        clicked, shot = done["results"]
        assert json.loads(_text(clicked))["cursor"] == [321, 123]
        assert pointer(disp) == (321, 123)
        image = shot["content"][0]
        assert image["type"] == "image" and image["mimeType"] == "image/png"
        assert png_rgb(base64.b64decode(image["data"])).shape == (768, 1024, 3)

        # a human holds control: a tool error with the API's meaning, X untouched
        token = session["viewer_url"].split("token=")[1]
        assert (await control(gw, sid, "take", token))[0] == 200
        done = await _node(mcp_node_client, gw, gw.token, [
            {"tool": "computer", "args": {"session_id": sid, "action": "left_click",
                                          "coordinate": [5, 5]}}])
        refused = done["results"][0]
        assert refused["isError"] is True
        assert "human-in-control (409)" in _text(refused)
        assert pointer(disp) == (321, 123)
        await control(gw, sid, "release", token)
    finally:
        disp.close()

    done = await _node(mcp_node_client, gw, gw.token, [
        {"tool": "stop_session", "args": {"session_id": sid}}])
    assert json.loads(_text(done["results"][0]))["session_id"] == sid
    await gw.wait_status(sid, {"stopped"})

    # without the API token the SDK cannot even connect
    for bad in ("", "not-the-token"):
        refused_auth = await _node(mcp_node_client, gw, bad, [{"list": True}])
        assert "results" not in refused_auth
        assert "401" in refused_auth["error"], refused_auth
