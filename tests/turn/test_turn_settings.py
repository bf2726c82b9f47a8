"""TURN settings and minted credentials, without a network (the relay test uses coturn)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.security.turn import TurnError, mint, read_secret, turn_password


def test_credentials_are_per_viewer_and_expire() -> None:
    a = mint(("turn:t.example:3478?transport=udp", "turns:t.example:5349"), b"s" * 20,
             "viewer-a", 600, now=1_000_000)
    b = mint(("turn:t.example:3478?transport=udp",), b"s" * 20, "viewer-b", 600, now=1_000_000)
    assert [s.url for s in a] == ["turn:t.example:3478?transport=udp", "turns:t.example:5349"]
    assert a[0].username == "1000600:viewer-a" == a[1].username
    assert a[0].credential == turn_password(b"s" * 20, "1000600:viewer-a")
    assert b[0].username != a[0].username and b[0].credential != a[0].credential
    # HMAC-SHA1, base64, as coturn computes it for use-auth-secret (value from openssl).
    assert turn_password(b"key", "1:u") == "2cKYra7Y2YqQwH1QQiN6z+qT0mo="  # openssl dgst -sha1 -hmac


def test_bad_turn_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="turn_secret_file"):
        GatewayConfig(turn_urls=("turn:t.example:3478",))
    with pytest.raises(ValueError, match="turn: or turns:"):
        GatewayConfig(turn_urls=("stun:t.example:3478",), turn_secret_file=tmp_path / "s")
    with pytest.raises(ValueError, match="turn_ttl_s"):
        GatewayConfig(turn_ttl_s=5)
    short = tmp_path / "short"
    short.write_text("tiny\n")
    with pytest.raises(TurnError, match="shorter than 16"):
        read_secret(short)
    with pytest.raises(TurnError, match="cannot read"):
        read_secret(tmp_path / "missing")
