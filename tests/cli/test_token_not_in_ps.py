"""The API token given as ``--token`` does not stay in the command line (issue 20, low).

Every local user can read ``/proc/<pid>/cmdline`` (``ps``); the environment only
the same uid and root. ``visual-runtime serve --token X`` re-executes itself at
once with the token in ``VISUAL_RUNTIME_TOKEN``: the running gateway's command
line has no token, and the token still works.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.cli.argv_secrets import without_token
from tests.gateway_fixtures import API_TOKEN, start_served_gateway, stop_served_gateway

pytestmark = pytest.mark.timeout(120)


async def test_served_gateway_hides_its_token(tmp_path: Path) -> None:
    proc, base = start_served_gateway(tmp_path / "state")  # started with --token API_TOKEN
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline and b"--state-dir" in cmdline, cmdline
        assert API_TOKEN.encode() not in b" ".join(cmdline) and b"--token" not in cmdline
        environ = Path(f"/proc/{proc.pid}/environ")
        assert environ.stat().st_mode & 0o077 == 0  # only its owner (and root) read it
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/visual-sessions",
                                headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
                assert resp.status == 200
            async with http.get(f"{base}/api/visual-sessions",
                                headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
    finally:
        stop_served_gateway(proc)


def test_only_the_token_flag_is_taken_out() -> None:
    assert without_token(["-m", "gateway", "serve", "--token", "s3", "--port", "0"]) == (
        ["-m", "gateway", "serve", "--port", "0"], "s3")
    assert without_token(["serve", "--token=s3"]) == (["serve"], "s3")
    assert without_token(["serve", "--port", "0"]) is None
    assert without_token(["demo", "--", "--token", "x"]) is None
