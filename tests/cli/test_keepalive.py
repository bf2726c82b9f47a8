"""Idle keep-alive connections are closed (issue 20, medium).

aiohttp keeps an idle HTTP/1.1 connection open for 3630 s by default, so idle
clients could hold the gateway's file descriptors for an hour each. ``serve``
now closes them after ``--keepalive-timeout`` (75 s by default). On a served
gateway with a 2 s timeout: a raw keep-alive connection gets its answer, then
the gateway closes it by itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from yarl import URL

from tests.gateway_fixtures import start_served_gateway, stop_served_gateway

pytestmark = pytest.mark.timeout(120)


async def test_idle_keepalive_connection_is_closed(tmp_path: Path) -> None:
    proc, base = start_served_gateway(tmp_path / "state", "--keepalive-timeout", "2")
    try:
        url = URL(base)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
                     "Connection: keep-alive\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        # Idle from here: the gateway (not we) ends the connection.
        assert await asyncio.wait_for(reader.read(1), 30) == b""
        writer.close()
    finally:
        stop_served_gateway(proc)
