"""CORS for the allowed origins only (preflight, exposed headers on every answer,
errors included), and the viewer's frame-ancestors following them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_fixtures import Gateway, in_process_gateway

ALLOWED = "http://dashboard.example:8080"
OTHER = "http://evil.example"


@pytest.fixture
async def cors_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, allowed_origins=(ALLOWED,)):
        yield gw


async def test_preflight_for_an_allowed_origin_only(cors_gateway: Gateway) -> None:
    gw = cors_gateway
    url = gw.url("/api/visual-sessions/abc/whep")
    ask = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    async with gw.http.options(url, headers={"Origin": ALLOWED, **ask}) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    async with gw.http.options(url, headers={"Origin": OTHER, **ask}) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
    # WHEP's own OPTIONS (no preflight): what the endpoint accepts
    async with gw.http.options(url) as resp:
        assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"


async def test_answers_and_errors_carry_cors_for_allowed_origins(cors_gateway: Gateway) -> None:
    gw = cors_gateway
    url = gw.url("/api/visual-sessions/no-such-session")
    async with gw.http.get(url, headers={"Origin": ALLOWED, **gw.auth}) as resp:
        assert resp.status == 404
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
        assert "Origin" in resp.headers["Vary"]
    async with gw.http.get(url, headers={"Origin": OTHER, **gw.auth}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with gw.http.get(url, headers=gw.auth) as resp:  # same-origin/curl: nothing added
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_viewer_may_be_framed_by_allowed_origins(cors_gateway: Gateway,
                                                       tmp_path: Path) -> None:
    gw = cors_gateway
    async with gw.http.get(gw.url("/viewer/viewer.css")) as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert f"frame-ancestors 'self' {ALLOWED}" in csp
        assert "X-Frame-Options" not in resp.headers
    async for plain in in_process_gateway(tmp_path / "plain"):
        async with plain.http.get(plain.url("/viewer/viewer.css")) as resp:
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Frame-Options"] == "DENY"
