"""Caps on open connections (issue 20, medium: "there are no connection caps").

Against ``visual-runtime serve`` with small caps, over real sockets: idle
connections from 127.0.0.1 fill its per-client cap, the next one from there is
answered ``503`` problem+json with ``Retry-After`` and closed, while 127.0.0.2
is still served; closing one idle connection frees its slot. Then the
gateway-wide cap refuses a fifth address. ``/metrics`` counts the open
connections and the refusals. A gateway started with a low soft file limit
raises it to the hard one, and derives its default caps from it; the systemd
unit in docs/operations.md sets a limit those defaults fit in.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
from pathlib import Path

import pytest
from yarl import URL

from gateway.security.conncap import HEADROOM_FDS, default_caps
from tests.gateway_fixtures import start_served_gateway, stop_served_gateway

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(base: URL, source: str) -> Conn:
    return await asyncio.open_connection(base.host, base.port, local_addr=(source, 0))


async def _request(conn: Conn, base: URL, path: str,
                   close: bool = False) -> tuple[int, dict[str, str], bytes]:
    reader, writer = conn
    extra = "Connection: close\r\n" if close else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {base.host}:{base.port}\r\n{extra}\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _get(base: URL, source: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection that the gateway closes (so it is not counted
    any more when the next connection is made)."""
    conn = await _connect(base, source)
    try:
        answer = await _request(conn, base, path, close=True)
        assert await asyncio.wait_for(conn[0].read(1), 10) == b""
        return answer
    finally:
        conn[1].close()


async def _metric(base: URL, name: str) -> float | None:
    """A value of /metrics, asked from 127.0.0.2; None if the gateway-wide cap refused it."""
    status, _, body = await _get(base, "127.0.0.2", "/metrics")
    if status == 503:
        return None
    assert status == 200
    match = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def _wait_open(base: URL, expected: int) -> None:
    """Until /metrics (itself one connection, from 127.0.0.2) counts *expected* in all."""
    for _ in range(100):
        if await _metric(base, "visual_runtime_connections") == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the gateway never counted {expected} open connections")


def _assert_refused(status: int, headers: dict[str, str], body: bytes, reason: str) -> None:
    assert status == 503, body
    assert headers["content-type"].startswith("application/problem+json")
    assert int(headers["retry-after"]) > 0
    assert headers.get("connection", "").lower() == "close"
    problem = json.loads(body)
    assert problem["type"].endswith("/too-many-connections")
    assert problem["reason"] == reason


async def test_caps_refuse_over_the_limit_and_free_on_close(tmp_path: Path) -> None:
    proc, url = start_served_gateway(tmp_path / "state", "--max-connections", "12",
                                     "--max-connections-per-client", "4")
    base = URL(url)
    idle: list[Conn] = []
    try:
        idle = [await _connect(base, "127.0.0.1") for _ in range(4)]
        await _wait_open(base, 5)  # four idle ones and the /metrics request

        over = await _connect(base, "127.0.0.1")
        _assert_refused(*await _request(over, base, "/healthz"), "per_client")
        assert await asyncio.wait_for(over[0].read(1), 10) == b""  # and closed
        over[1].close()
        silent = await _connect(base, "127.0.0.1")  # over the cap and sends nothing:
        assert await asyncio.wait_for(silent[0].read(1), 20) == b""  # closed, no answer
        silent[1].close()
        status, _, _ = await _get(base, "127.0.0.2", "/healthz")  # another client: served
        assert status == 200
        assert await _metric(base, 'visual_runtime_connections_refused_total{reason="per_client"}') == 2

        # An idle one goes: its slot is free again.
        reader, writer = idle.pop()
        writer.close()
        await _wait_open(base, 4)
        again = await _connect(base, "127.0.0.1")
        status, _, _ = await _request(again, base, "/healthz")
        assert status == 200
        idle.append(again)  # keep-alive: still open, counted
        # The gateway-wide cap of 12: 4 + 4 + 3 idle from three addresses, then a
        # 12th from 127.0.0.2 (accepted in order, before the next one).
        idle += [await _connect(base, "127.0.0.3") for _ in range(4)]
        idle += [await _connect(base, "127.0.0.4") for _ in range(3)]
        await _wait_open(base, 12)  # the 12th is the /metrics request itself
        idle.append(await _connect(base, "127.0.0.2"))
        _assert_refused(*await _get(base, "127.0.0.5", "/healthz"), "total")
        reader, writer = idle.pop(0)
        writer.close()
        await _wait_open(base, 12)  # 11 idle and this /metrics request
        status, _, _ = await _get(base, "127.0.0.5", "/healthz")
        assert status == 200
        # (a /metrics poll made before the close was seen may have been refused too)
        refused = await _metric(base, 'visual_runtime_connections_refused_total{reason="total"}')
        assert refused is not None and refused >= 1
    finally:
        for _, writer in idle:
            writer.close()
        stop_served_gateway(proc)


def _documented_nofile() -> int:
    text = (ROOT / "docs" / "operations.md").read_text()
    match = re.search(r"^LimitNOFILE=(\d+)$", text, re.M)
    assert match, "docs/operations.md has no LimitNOFILE in its systemd unit"
    return int(match.group(1))


async def test_soft_file_limit_is_raised_and_sets_the_default_caps(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 256, "this test needs a hard file limit above 256"
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the gateway
    try:
        proc, url = start_served_gateway(tmp_path / "state")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        gateway_soft, gateway_hard = row.split()[3:5]
        assert gateway_soft == gateway_hard, row
        total, per_client = default_caps(int(gateway_soft))
        base = URL(url)
        assert await _metric(base, 'visual_runtime_connection_limit{scope="total"}') == total
        assert await _metric(base, 'visual_runtime_connection_limit{scope="per_client"}') == per_client
    finally:
        stop_served_gateway(proc)
    # The documented unit's limit holds the default caps, twice over (proxied
    # sockets), with the headroom the sessions need.
    documented = _documented_nofile()
    total, _ = default_caps(documented)
    assert 2 * total + HEADROOM_FDS <= documented
    assert total >= 1024, "the documented unit should allow more than a toy number of clients"
