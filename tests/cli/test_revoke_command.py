"""Revoking a token from the project's own clients, against a real ``visual-runtime serve``:
the Python client (``RemoteSession.mint_token`` / ``revoke_token``) and the CLI
(``visual-runtime sessions revoke ID TOKEN``). A revoked view token's WebSocket viewer is
closed with 1008 and the token is refused; a token the session does not have is an
error that changes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.cli.helpers import run_cli
from tests.gateway_fixtures import (
    API_TOKEN,
    start_served_gateway,
    stop_served_gateway,
    wait_no_pod_processes,
)
from visual_runtime_client import NotFound, VisualRuntimeClient, token_id


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--url", url, "--token", API_TOKEN)


async def _first_frame(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Skip the JSON hello; return at the first binary (video) message."""
    while True:
        msg = await ws.receive(timeout=30)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.BINARY:
            return


@pytest.mark.timeout(240)
async def test_revoke_from_the_client_and_the_cli(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, url = start_served_gateway(state, "--apps", "fluxbox")
    try:
        async with VisualRuntimeClient(url, API_TOKEN) as client, aiohttp.ClientSession() as http:
            session = await client.create_session(resolution="640x480")
            sid = session.session_id
            minted = await session.mint_token("view")
            assert minted.token_id == token_id(minted.token)
            assert minted.viewer_url.startswith(f"{url}/sessions/{sid}/")
            info = f"{url}/sessions/{sid}/info"
            async with http.get(info, headers={"Authorization": f"Bearer {minted.token}"}) as r:
                assert r.status == 200

            ws = await http.ws_connect(f"{url}/sessions/{sid}/stream?token={minted.token}")
            await _first_frame(ws)  # the viewer gets frames

            # The client takes the token itself (or its id).
            done = await session.revoke_token(minted.token)
            assert (done.token_id, done.kind) == (minted.token_id, "view")
            assert done.closed == 1 and not done.released_control
            async with asyncio.timeout(10):
                closing = await ws.receive()
                while closing.type == aiohttp.WSMsgType.BINARY:  # frames sent before it
                    closing = await ws.receive()
            assert closing.type == aiohttp.WSMsgType.CLOSE, closing
            assert (closing.data, closing.extra) == (1008, "token revoked")
            async with http.get(info, headers={"Authorization": f"Bearer {minted.token}"}) as r:
                assert r.status == 401
            with pytest.raises(NotFound):
                await session.revoke_token(minted.token_id)  # already revoked

            # The CLI, by token id; a second time it fails clearly and changes nothing.
            control = await session.mint_token("control")
            revoked = _cli(url, "sessions", "revoke", sid, control.token_id, "--json")
            assert revoked.returncode == 0, revoked.stderr
            body = json.loads(revoked.stdout)
            assert body["token_id"] == control.token_id and body["kind"] == "control"
            again = _cli(url, "sessions", "revoke", sid, control.token_id)
            assert again.returncode != 0 and "not" in again.stderr.lower(), again.stderr
            assert "Traceback" not in again.stderr
            async with http.get(info, headers={"Authorization": f"Bearer {control.token}"}) as r:
                assert r.status == 401
            events = [e for e in await session.logs() if e.get("type") == "token_revoked"]
            assert sorted(e["kind"] for e in events) == ["control", "view"]
            await session.stop()
    finally:
        stop_served_gateway(proc)
        assert wait_no_pod_processes(state) == []
