"""The docker backend's X display: only the pod's two containers open it (issue 20, H1).

The same checks as ``security/test_x_display_auth.py`` on a docker pod: the
socket folder and the cookie belong to the two container uids, another host
uid cannot reach the socket, root without the cookie is refused by the app
container's Xvfb (started with ``-auth``), root with it is let in, and the
runtime agent (python-xlib, in the host's network) still captures.
"""

from __future__ import annotations

import os

import docker
import pytest

from gateway.appkeys import CONFIG
from gateway.backends.xauth import read_cookie
from tests.docker.conftest import pod_uids
from tests.gateway_fixtures import Gateway
from tests.security.test_x_display_auth import as_nobody, x_setup

pytestmark = pytest.mark.timeout(300)


async def test_docker_pod_display_needs_the_cookie(
        docker_gateway: Gateway, docker_client: docker.DockerClient) -> None:
    gw = docker_gateway
    sid = (await gw.create_running(network="none"))["session_id"]
    runtime = gw.extra["app"][CONFIG].runtime_dir / sid
    x_socket, xauth = runtime / "x11" / "X0", runtime / "Xauthority"
    folder, cookie_file = (runtime / "x11").stat(), xauth.stat()
    uid_app, uid_agent = pod_uids(gw, sid)
    assert (folder.st_uid, folder.st_gid, folder.st_mode & 0o7777) == (uid_agent, uid_app, 0o770)
    assert (cookie_file.st_uid, cookie_file.st_gid, cookie_file.st_mode & 0o7777) == (
        uid_app, uid_agent, 0o440)
    assert as_nobody(f"print(x_setup({str(x_socket)!r}))") == "EACCES"
    assert x_setup(str(x_socket)) == 0
    assert x_setup(str(x_socket), os.urandom(16)) == 0
    assert x_setup(str(x_socket), read_cookie(xauth)) == 1
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.read()).startswith(b"\x89PNG")
    await gw.stop(sid)
