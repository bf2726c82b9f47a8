"""The remote link, for real: a runtime agent serving TCP+TLS with the session's secret,
and the gateway's AgentClient speaking to it (health, screenshots, actions, the
WebSocket stream, the recording and log mirror), next to the unix socket it keeps.

Refusals are checked on the wire: no secret, a wrong secret, plain HTTP to the TLS
port, and a client that pins another session's certificate all get nothing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.backends.remote import AgentEndpoint, new_credentials
from gateway.sessions.agent_link import AgentClient, AgentUnavailable
from tests.conftest import XDisplay
from tests.security.agent_process import AgentProcess, Painter, start_agent, stop_agent
from wire import agent_api, remote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def linked(xvfb: XDisplay, tmp_path: Path
                 ) -> AsyncIterator[tuple[AgentProcess, AgentEndpoint, Path]]:
    creds = new_credentials("link-test")
    secret_file, bundle = tmp_path / "secret", tmp_path / "bundle.pem"
    secret_file.write_text(creds.secret)
    bundle.write_text(creds.bundle_pem)
    secret_file.chmod(0o600)
    bundle.chmod(0o600)
    logs, recording = tmp_path / "logs", tmp_path / "recording"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"first line\n")
    port = free_port()
    agent = await start_agent(
        xvfb.name, (xvfb.width, xvfb.height), tmp_path,
        "--listen", f"127.0.0.1:{port}", "--secret-file", str(secret_file),
        "--tls-bundle", str(bundle), "--recording", str(recording),
        "--mirror", f"logs={logs}", "--mirror", f"recording={recording}")
    endpoint = AgentEndpoint(host="127.0.0.1", port=port, secret=creds.secret,
                             cert_pem=creds.cert_pem)
    try:
        yield agent, endpoint, logs
    finally:
        stop_agent(agent)


async def test_the_gateway_client_speaks_tls_with_the_secret(
        linked: tuple[AgentProcess, AgentEndpoint, Path], xvfb: XDisplay) -> None:
    agent, endpoint, logs = linked
    client = AgentClient(endpoint, "link-test")
    painter = Painter(xvfb.name)
    painter.start()
    try:
        assert client.socket_path is None
        assert await client.health()
        shot = await client.request("GET", agent_api.SCREENSHOT)
        assert shot.status == 200 and shot.body.startswith(b"\x89PNG")
        moved = await client.request("POST", agent_api.ACTIONS, headers={
            agent_api.TOKEN_KIND_HEADER: "api", agent_api.TOKEN_ID_HEADER: "t"},
            json_body={"action": "mouse_move", "coordinate": [321, 123]})
        assert moved.status == 200, moved.body
        assert moved.json()["cursor"] == [321, 123]
        stats = await client.stats()
        assert stats["inputs_applied"] >= 1

        # The WebSocket stream (what /stream proxies) over the same link.
        async with client.open_http() as http, http.ws_connect(
                client.url(agent_api.STREAM), headers={
                    agent_api.TOKEN_KIND_HEADER: "view", agent_api.TOKEN_ID_HEADER: "v"},
                **client.request_options) as ws:
            binary = 0
            async with asyncio.timeout(20):
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        binary += 1
                        if binary >= 3:
                            break
            assert binary >= 3

        # The mirror: the log folder's files, read from an offset.
        listing = (await client.request("GET", remote.mirror_list("logs"))).json()
        assert {"name": "app.log", "size": 11} in listing
        with (logs / "app.log").open("ab") as f:
            f.write(b"second line\n")
        tail = await client.request("GET", remote.mirror_file("logs", "app.log") + "?offset=11")
        assert tail.status == 200 and tail.body == b"second line\n"
        for bad in ("..", ".hidden", "a%2Fb"):
            reply = await client.request("GET", remote.mirror_file("logs", bad))
            assert reply.status == 404
        assert (await client.request("GET", remote.mirror_list("home"))).status == 404
        recording = (await client.request("GET", remote.mirror_list("recording"))).json()
        assert any(f["name"] == "recording.mp4" and f["size"] > 0 for f in recording)
    finally:
        await painter.stop()
        await client.aclose()


async def test_the_link_refuses_everyone_else(
        linked: tuple[AgentProcess, AgentEndpoint, Path]) -> None:
    agent, endpoint, _ = linked
    # No secret, a wrong secret: 401 and nothing served.
    for headers in ({}, {remote.AUTHORIZATION: remote.bearer("x" * 43)},
                    {remote.AUTHORIZATION: endpoint.secret}):
        wrong = AgentClient(AgentEndpoint(host=endpoint.host, port=endpoint.port, secret="s" * 32,
                                          cert_pem=endpoint.cert_pem), "t")
        try:
            async with wrong.open_http() as http, http.get(
                    wrong.url(agent_api.SCREENSHOT), headers=headers or None,
                    **wrong.request_options) as resp:
                body = await resp.read()
                assert resp.status == 401, body
                assert b"PNG" not in body
        finally:
            await wrong.aclose()
    # A WebSocket without the secret is refused before the upgrade.
    bare = AgentClient(AgentEndpoint(host=endpoint.host, port=endpoint.port, secret="s" * 32,
                                     cert_pem=endpoint.cert_pem), "t")
    async with bare.open_http() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(bare.url(agent_api.STREAM), **bare.request_options)
        assert refused.value.status == 401
    # Plain HTTP to the TLS port gets no answer.
    plain = AgentClient(AgentEndpoint(host=endpoint.host, port=endpoint.port,
                                      secret=endpoint.secret), "t")
    with pytest.raises(AgentUnavailable):
        await plain.request("GET", agent_api.HEALTH, timeout=5)
    await plain.aclose()
    # A client that pins another session's certificate does not talk to this agent.
    other = AgentClient(AgentEndpoint(host=endpoint.host, port=endpoint.port,
                                      secret=endpoint.secret,
                                      cert_pem=new_credentials("other").cert_pem), "t")
    with pytest.raises(AgentUnavailable, match="(?i)certificate"):
        await other.request("GET", agent_api.HEALTH, timeout=5)
    await other.aclose()
    # The unix socket still answers without a secret (only the gateway can open it).
    async with agent.http() as http, http.get("http://agent" + agent_api.HEALTH) as resp:
        assert resp.status == 200
    assert "refused a link request" in agent.log.read_text()


def test_the_agent_never_listens_without_a_secret(tmp_path: Path) -> None:
    import subprocess
    import sys
    done = subprocess.run(
        [sys.executable, "-m", "agent_side", "--socket", str(tmp_path / "s"), "--display", ":0",
         "--resolution", "640x480", "--listen", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--listen needs --secret-file" in done.stderr
    short = tmp_path / "short"
    short.write_text("too short")
    done = subprocess.run(
        [sys.executable, "-m", "agent_side", "--socket", str(tmp_path / "s"), "--display", ":0",
         "--resolution", "640x480", "--listen", "127.0.0.1:9", "--secret-file", str(short)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "shorter than 32" in done.stderr


async def test_the_node_s_configured_addresses_are_the_only_host_candidates(
        linked: tuple[AgentProcess, AgentEndpoint, Path]) -> None:
    import dataclasses
    import re

    import ifaddr
    from aiortc import RTCPeerConnection

    _, endpoint, _ = linked
    local = sorted({ip.ip for a in ifaddr.get_adapters() for ip in a.ips
                    if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
                    and not str(a.nice_name).startswith(("vrh", "vrs", "vrd"))})
    assert len(local) >= 2, f"this test needs two IPv4 interfaces besides lo: {local}"

    async def host_candidates(ep: AgentEndpoint) -> set[str]:
        client = AgentClient(ep, "link-test")
        pc = RTCPeerConnection()
        try:
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            reply = await client.request(
                "POST", agent_api.WHEP, data=pc.localDescription.sdp, timeout=30,
                headers={"Content-Type": "application/sdp", agent_api.TOKEN_KIND_HEADER: "view",
                         agent_api.TOKEN_ID_HEADER: "v"})
            assert reply.status == 201, reply.body
            peer = reply.headers[agent_api.PEER_ID_HEADER]
            await client.request("DELETE", agent_api.whep_peer(peer))
            return set(re.findall(r"a=candidate:\S+ \d \S+ \d+ (\S+) \d+ typ host",
                                  reply.body.decode()))
        finally:
            await pc.close()
            await client.aclose()

    chosen = local[-1]
    only = await host_candidates(dataclasses.replace(endpoint, ice_addresses=(chosen,)))
    assert only == {chosen}
    # A request without the header leaves the setting as it is; an empty header offers
    # every address again.
    unchanged = await host_candidates(dataclasses.replace(endpoint, ice_addresses=()))
    assert unchanged == {chosen}
    reset = AgentEndpoint(host=endpoint.host, port=endpoint.port, secret=endpoint.secret,
                          cert_pem=endpoint.cert_pem)
    client = AgentClient(reset, "link-test")
    try:
        reply = await client.request("GET", agent_api.HEALTH, headers={
            remote.ICE_ADDRESSES_HEADER: ""})
        assert reply.status == 200
    finally:
        await client.aclose()
    assert {a for a in await host_candidates(reset) if "." in a} == set(local)
