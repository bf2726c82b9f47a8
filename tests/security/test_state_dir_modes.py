"""The state dir is closed to other local users (issue 20, medium).

It holds every session's recording, shared folder and logs, the API token
and the database; it used to be created 0755, so any local user could read
recordings and shared folders. Now the gateway makes it 0700 when it starts;
sessions still work (their folders reach the pods through bind mounts made
as root), and another uid cannot list or read anything under it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes

pytestmark = pytest.mark.timeout(120)
PROBE = """
import json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").read(1)
        out[path] = "ok"
    except OSError as e:
        out[path] = type(e).__name__
print(json.dumps(out))
"""


@pytest.fixture
async def open_parent_gateway() -> AsyncIterator[Gateway]:
    """A light gateway whose state dir's parents every user may traverse (pytest's own
    temporary folders are 0700, which would hide the state dir's mode)."""
    parent = Path(tempfile.mkdtemp(prefix="vr-state-modes-"))
    parent.chmod(0o755)
    try:
        async for gw in in_process_gateway(parent, apps=("xterm",)):
            yield gw
        assert wait_no_pod_processes(gw.state_dir) == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)


async def test_other_users_cannot_read_the_state_dir(open_parent_gateway: Gateway) -> None:
    gw = open_parent_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    state = gw.state_dir
    assert state.stat().st_mode & 0o777 == 0o700
    targets = [state, state / "sessions", state / "sessions" / sid / "logs" / "agent.log",
               state / "sessions" / sid / "home" / "Downloads"]
    assert all(t.exists() for t in targets)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
         sys.executable, "-c", PROBE, *map(str, targets)],
        capture_output=True, text=True, timeout=30, check=True)
    assert set(json.loads(result.stdout).values()) == {"PermissionError"}, \
        result.stdout
    # The session works behind it: its screen is served.
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200
    await gw.stop(sid)
