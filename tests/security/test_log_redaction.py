"""No spelling of the ``token`` query parameter reaches the access log (issue 20, low).

aiohttp decodes query names, so ``?%74oken=`` and ``?t%6Fken=`` ARE the
``token`` parameter to the gateway (the viewer's info endpoint accepts them);
the access-log filter used to match only the literal ``token=``. On a real
``visual-runtime serve``: each spelling is accepted as the token, and its value
never appears in the access log, while the request line (and other
parameters) stay.
"""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.gateway_fixtures import API_TOKEN, start_served_gateway, wait_no_pod_processes

pytestmark = pytest.mark.timeout(120)
SPELLINGS = ["token", "%74oken", "t%6Fken", "%74%6f%6b%65%6e", "tok%65n"]


async def test_every_spelling_of_token_is_redacted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, base = start_served_gateway(state)
    try:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {API_TOKEN}"}
            async with http.post(f"{base}/api/visual-sessions", headers=auth,
                                 json={"resolution": "640x480",
                                       "enable_recording": False}) as resp:
                assert resp.status == 201, await resp.text()
                session = await resp.json()
            sid, view = session["session_id"], session["tokens"]["view"]
            for name in SPELLINGS:
                url = URL(f"{base}/sessions/{sid}/info?{name}={view}&x=1", encoded=True)
                async with http.get(url) as resp:
                    assert resp.status == 200, (name, resp.status)  # accepted as the token
            async with http.delete(f"{base}/api/visual-sessions/{sid}", headers=auth) as resp:
                assert resp.status < 300, await resp.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        log = proc.stdout.read().decode(errors="replace")
        proc.wait(timeout=30)
        proc.stdout.close()
    assert wait_no_pod_processes(state) == []
    for name in SPELLINGS:
        assert f"?{name}=REDACTED&x=1" in log, (name, log[-2000:])
    assert view not in log
