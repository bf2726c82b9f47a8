"""Edge protections of the gateway (gateway/hardening.py, throttle.py, origin.py).

* failed-token throttling: 429 problem + Retry-After after N failures from one
  address, the token not even checked while throttled, bounded memory;
* constant-time comparison of the API token;
* the session-creation rate limit;
* Origin checks on WebSocket upgrades and WHEP;
* request size limits (JSON, SDP, chunked bodies, header lines);
* errors never carry tracebacks or internal paths.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.security.auth import Authenticator
from gateway.security.hardening import HARDENING
from gateway.security.origin import normalise_origin
from gateway.security.throttle import AuthThrottle, TokenBucket, retry_after_header
from gateway.sessions import tokens as tokens_module
from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes

SESSIONS = "/api/visual-sessions"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------- units


def test_throttle_counts_failures_per_client_within_the_window() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(3, 60.0, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")
    wait = throttle.retry_after("10.0.0.1")
    assert wait is not None and 59.0 < wait <= 60.0
    assert throttle.retry_after("10.0.0.2") is None  # another client is not affected
    clock.now += 30
    assert throttle.retry_after("10.0.0.1") is not None
    clock.now += 30.5  # the oldest failure left the window
    assert throttle.retry_after("10.0.0.1") is None


def test_throttle_memory_is_bounded() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(2, 60.0, max_clients=100, clock=clock)
    for i in range(10_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle) <= 100
    clock.now += 120
    throttle.failed("192.0.2.1")
    assert len(throttle) <= 100
    # a failure queue never holds more than `limit` timestamps
    for _ in range(1000):
        throttle.failed("192.0.2.9")
    assert len(throttle._failures["192.0.2.9"]) == 2


def test_token_bucket_burst_then_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=0.5, burst=3, clock=clock)
    assert [bucket.take("k") for _ in range(3)] == [None, None, None]
    wait = bucket.take("k")
    assert wait is not None and 1.9 < wait <= 2.0
    assert retry_after_header(wait) == "2"
    assert bucket.take("other") is None
    clock.now += 2.0
    assert bucket.take("k") is None
    assert bucket.take("k") is not None
    clock.now += 3600
    assert [bucket.take("k") for _ in range(4)][:3] == [None, None, None]  # capped at burst


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("HTTP://Example.COM:80", "http://example.com"),
    ("https://example.com:443/", "https://example.com"),
    ("http://[::1]:3000", "http://[::1]:3000"),
    ("null", None), ("", None), ("file://", None), ("http://a.example/path", None),
    ("http://user@a.example", None), ("http://a.example:99999", None), ("javascript:x", None),
])
def test_normalise_origin(raw: str, expected: str | None) -> None:
    assert normalise_origin(raw) == expected


def test_api_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one comparison against a secret in plain text goes through hmac.compare_digest
    (session tokens are looked up by their SHA-256 digest)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    auth = Authenticator("the-api-token")
    request = make_mocked_request("GET", "/api/visual-sessions",
                                  headers={"Authorization": "Bearer the-api-token"})
    assert auth.api(request).kind == "api"
    assert (b"the-api-token", b"the-api-token") in calls
    calls.clear()
    bad = make_mocked_request("GET", "/api/visual-sessions",
                              headers={"Authorization": "Bearer the-api-tokex"})
    with pytest.raises(Exception) as info:
        auth.api(bad)
    assert getattr(info.value, "status", None) == 401
    assert (b"the-api-tokex", b"the-api-token") in calls


# ----------------------------------------------------------------- live gateway


@pytest.fixture
async def strict_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """Light sessions with small limits, an allow-listed origin and a 4 KiB body cap."""
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), auth_failure_limit=5,
                                       auth_failure_window_s=300, create_burst=2,
                                       create_rate_per_minute=1, max_body_kb=4,
                                       allowed_origins=("https://app.example",)):
        yield gw
    assert wait_no_pod_processes(gw.state_dir) == []


async def _problem(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json", (resp.content_type, text)
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status
    return body


async def test_failed_tokens_throttle_the_address(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    # missing tokens are not guesses: they do not count
    for _ in range(8):
        async with gw.http.get(gw.url(SESSIONS)) as resp:
            await _problem(resp, 401)
    # a valid request in between resets nothing
    for i in range(5):
        async with gw.http.get(gw.url(SESSIONS), headers={"Authorization": f"Bearer guess{i}"}) as resp:
            await _problem(resp, 401)
        if i == 2:
            async with gw.http.get(gw.url(SESSIONS), headers=gw.auth) as resp:
                assert resp.status == 200
    # throttled: 429 with Retry-After for everything, even the right token, on every route
    for path, headers in ((SESSIONS, gw.auth), (SESSIONS, {"Authorization": "Bearer guess9"}),
                          ("/sessions/x/?token=guess", {}), (SESSIONS + "/x/whep", gw.auth)):
        async with gw.http.get(gw.url(path), headers=headers) as resp:
            body = await _problem(resp, 429)
            assert 1 <= int(resp.headers["Retry-After"]) <= 300
            assert "invalid tokens" in body["detail"]
    # query tokens count too, and the health check and static files stay reachable
    async with gw.http.get(gw.url("/healthz")) as resp:
        assert resp.status == 200
    async with gw.http.get(gw.url("/viewer/viewer.css")) as resp:
        assert resp.status == 200
    async with gw.http.get(gw.url("/api/openapi.json")) as resp:
        assert resp.status == 200


async def test_query_token_failures_count(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    session = await gw.create()
    sid = session["session_id"]
    for i in range(5):
        async with gw.http.get(gw.url(f"/sessions/{sid}/info?token=wrong{i}")) as resp:
            await _problem(resp, 401)
    async with gw.http.get(gw.url(f"/sessions/{sid}/info?token={session['tokens']['view']}")) as resp:
        await _problem(resp, 429)
    assert len(gw.extra["app"][HARDENING].auth) == 1  # one address tracked
    # (throttled now: the fixture's shutdown stops the session)


async def test_session_creation_rate_limit(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    created = [await gw.create(), await gw.create()]
    async with gw.http.post(gw.url(SESSIONS), json={}, headers=gw.auth) as resp:
        body = await _problem(resp, 429)
        assert "rate limit" in body["detail"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # a refused create changes nothing
    async with gw.http.get(gw.url(SESSIONS), headers=gw.auth) as resp:
        listed = (await resp.json())["sessions"]
    assert sorted(s["session_id"] for s in listed) == sorted(s["session_id"] for s in created)
    # a bad token is a 401 (and counted), not a rate-limit answer
    async with gw.http.post(gw.url(SESSIONS), json={}, headers={"Authorization": "Bearer x"}) as resp:
        await _problem(resp, 401)
    for s in created:
        await gw.stop(s["session_id"])


@pytest.mark.parametrize("path", ["/sessions/{sid}/stream", "/sessions/{sid}/vnc/websockify"])
async def test_websocket_origin_check(strict_gateway: Gateway, path: str) -> None:
    gw = strict_gateway
    session = await gw.create_running(resolution="640x480", enable_recording=False)
    sid = session["session_id"]
    url = gw.url(path.format(sid=sid)) + f"?token={session['tokens']['view']}"
    protocols = ("binary",) if "vnc" in path else ()
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await gw.http.ws_connect(url, origin=origin, protocols=protocols)
        assert info.value.status == 403, origin
    # its own origin, an allow-listed one, and none at all (non-browser clients) connect
    for origin in (gw.base_url, "https://app.example", None):
        ws = await gw.http.ws_connect(url, origin=origin, protocols=protocols)
        try:
            msg = await ws.receive(timeout=20)
            assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
        finally:
            await ws.close()
    await gw.stop(sid)


async def test_whep_origin_check(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    url = gw.url(f"{SESSIONS}/no-such-session/whep")
    sdp = {"Content-Type": "application/sdp"}
    async with gw.http.post(url, data=b"v=0", headers={**gw.auth, **sdp,
                                                       "Origin": "http://evil.example"}) as resp:
        body = await _problem(resp, 403)
        assert "origin" in body["detail"]
    for method in ("DELETE", "PATCH"):
        async with gw.http.request(method, url + "/peer", headers={
                **gw.auth, "Origin": "https://evil.example"}) as resp:
            await _problem(resp, 403)
    # allowed origins go on to the normal checks (here: unknown session)
    for origin in (gw.base_url, "https://app.example"):
        async with gw.http.post(url, data=b"v=0", headers={**gw.auth, **sdp,
                                                           "Origin": origin}) as resp:
            await _problem(resp, 404)
    # the rest of the API is not origin-checked (CORS keeps other origins from reading it)
    async with gw.http.get(gw.url(SESSIONS), headers={**gw.auth,
                                                      "Origin": "http://evil.example"}) as resp:
        assert resp.status == 200


async def test_request_size_limits(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    big = {"resolution": "800x600", "padding": "x" * 5000}
    async with gw.http.post(gw.url(SESSIONS), json=big, headers=gw.auth) as resp:
        await _problem(resp, 413)

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with gw.http.post(gw.url(SESSIONS), data=chunked(),
                            headers={**gw.auth, "Content-Type": "application/json"}) as resp:
        await _problem(resp, 413)
    async with gw.http.post(gw.url(f"{SESSIONS}/x/whep"), data=b"v=0\r\n" * 2000,
                            headers={**gw.auth, "Content-Type": "application/sdp"}) as resp:
        await _problem(resp, 413)
    # chunked beyond client_max_size (1 MiB): 413 problem too
    async def huge() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield b"{" * 65536

    async with gw.http.post(gw.url(f"{SESSIONS}/x/control"), data=huge(),
                            headers={**gw.auth, "Content-Type": "application/json"}) as resp:
        await _problem(resp, 413)
    # nothing was created
    async with gw.http.get(gw.url(SESSIONS), headers=gw.auth) as resp:
        assert (await resp.json())["sessions"] == []
    # an oversized header line is refused by the HTTP parser (400, plain text, no trace)
    async with gw.http.get(gw.url(SESSIONS), headers={**gw.auth, "X-Big": "a" * 10000}) as resp:
        text = await resp.text()
        assert resp.status in (400, 431), text
        assert "Traceback" not in text and "/work/" not in text


async def test_errors_carry_no_internal_details(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    state = str(gw.state_dir)
    probes: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("GET", "/nope", {}, None),
        ("POST", SESSIONS, {**gw.auth, "Content-Type": "application/json"}, b"{bad json"),
        ("POST", SESSIONS, {**gw.auth, "Content-Type": "application/json"}, b"\xff\xfe"),
        ("POST", SESSIONS, {**gw.auth, "Content-Type": "text/plain"}, b"{}"),
        ("PUT", SESSIONS, gw.auth, None),
        ("GET", "/viewer/../gateway/app.py", {}, None),
        ("GET", "/viewer/%2e%2e/gateway/app.py", {}, None),
        ("GET", "/viewer/js/nope.js", {}, None),
        ("GET", f"{SESSIONS}/x/files/..%2f..%2fetc", gw.auth, None),
        ("GET", f"{SESSIONS}?status=%00", gw.auth, None),
    ]
    for method, path, headers, body in probes:
        async with gw.http.request(method, gw.url(path), headers=headers, data=body) as resp:
            text = await resp.text()
            assert 400 <= resp.status < 500, (path, resp.status, text)
            assert resp.content_type == "application/problem+json", (path, text)
            for leak in ("Traceback", "/work/", "/run/", state, "site-packages", " object at 0x"):
                assert leak not in text, (path, leak, text)


def test_tokens_in_urls_are_redacted_from_the_access_log() -> None:
    """aiohttp's access log prints the request line; ?token= must not reach the log."""
    import logging

    from gateway.app import create_app
    from gateway.config import GatewayConfig

    create_app(GatewayConfig(), "api-token")
    access = logging.getLogger("aiohttp.access")
    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1,
                               '%s "%s" %s', ("127.0.0.1",
                                              "GET /sessions/abc/?token=s3cr3t-view&x=1 HTTP/1.1",
                                              200), None)
    assert access.filter(record)
    message = record.getMessage()
    assert "s3cr3t-view" not in message
    assert "token=REDACTED&x=1" in message
