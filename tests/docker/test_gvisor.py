"""The docker backend with ``--docker-runtime runsc``: the desktop under gVisor.

A full session (live view over WHEP, XTest input, screenshots, the recording)
and the isolation checks of ``test_docker_backend.py`` re-run for an app
container on gVisor: a non-root user without capabilities or new privileges, a
read-only root, the limits, no network (``none``) or no way to the host's
services and the gateway (``egress``), Chromium inside its own sandbox.
``scripts/docker-setup.sh`` registers ``runsc`` with dockerd; a missing
registration fails here (the backend refuses to start), it never skips.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest
from PIL import Image

from gateway.backends.docker_runtime import GVISOR_PIDS_FACTOR
from gateway.config import GatewayConfig
from gateway.errors import BackendError
from tests.cli.helpers import run_cli
from tests.docker.conftest import owned
from tests.docker.test_docker_backend import (
    _host_addresses,
    connect_code,
    pod,
    run_in,
    screenshot,
)
from tests.gateway_fixtures import Gateway, in_process_gateway
from tests.webrtc.whep_client import WhepViewer

GVISOR_KERNEL = "Linux version 4.4.0"
"""What gVisor's Sentry answers in /proc/version (the host runs 6.x)."""


@pytest.fixture
async def gvisor_gateway(tmp_path: Path, docker_client: docker.DockerClient
                         ) -> AsyncIterator[Gateway]:
    """An in-process docker gateway whose app containers run on runsc."""
    async for gw in in_process_gateway(tmp_path, backend="docker", docker_runtime="runsc"):
        yield gw
    assert owned(docker_client, tmp_path / "state") == ([], [])


def test_runsc_is_registered_with_hostuds(docker_client: docker.DockerClient) -> None:
    runtimes = docker_client.info()["Runtimes"]
    assert "runsc" in runtimes, runtimes
    assert "--host-uds=create" in runtimes["runsc"].get("runtimeArgs", []), runtimes["runsc"]


def test_unknown_runtime_fails_at_start(tmp_path: Path,
                                        docker_client: docker.DockerClient) -> None:
    from gateway.backends.docker import DockerBackend
    config = GatewayConfig(state_dir=tmp_path / "state", backend="docker",
                           docker_runtime="no-such-runtime")
    with pytest.raises(BackendError, match=r"'no-such-runtime' is not registered.*runc"):
        DockerBackend(config)


def test_doctor_checks_the_docker_runtime(tmp_path: Path) -> None:
    for runtime, ok in (("runsc", True), ("no-such-runtime", False)):
        result = run_cli("doctor", "--backend", "docker", "--docker-runtime", runtime, "--json",
                         "--state-dir", str(tmp_path / "state"), "--port", "0")
        checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
        check = checks["docker runtime"]
        assert check["ok"] is ok, check
        if ok:
            assert "gVisor /usr/bin/runsc" in check["detail"], check
        else:
            assert "not registered" in check["detail"] and result.returncode == 1, check


async def test_gvisor_session_view_actions_screenshot_recording(
        gvisor_gateway: Gateway, docker_client: docker.DockerClient) -> None:
    gw = gvisor_gateway
    session = await gw.create_running(resolution="1280x720", network="none")
    sid = session["session_id"]
    app = pod(docker_client, gw.state_dir, sid, "app")
    agent = pod(docker_client, gw.state_dir, sid, "agent")
    assert app.attrs["HostConfig"]["Runtime"] == "runsc"
    assert agent.attrs["HostConfig"]["Runtime"] == "runc"  # the agent stays on the host kernel
    code, out = await run_in(app, "print(open('/proc/version').read())",
                             user=app.attrs["Config"]["User"])
    assert code == 0 and out.startswith(GVISOR_KERNEL), out

    # Live view: frames of the session's size through WHEP.
    viewer = WhepViewer(gw, sid, session["tokens"]["view"], codec="h264")
    try:
        await viewer.connect()
        frames = await viewer.wait_frames(5, within=60)
        assert (frames[-1].width, frames[-1].height) == (1280, 720)
    finally:
        await viewer.close()

    # Input through XTest reaches the X server inside gVisor (the pointer moves).
    base = gw.url(f"/api/visual-sessions/{sid}")
    for x, y in ((100, 200), (640, 360)):
        async with gw.http.post(base + "/actions", headers=gw.auth,
                                json={"action": "mouse_move", "coordinate": [x, y]}) as resp:
            assert resp.status == 200, await resp.text()
        async with gw.http.post(base + "/actions", headers=gw.auth,
                                json={"action": "cursor_position"}) as resp:
            assert (await resp.json())["cursor"] == [x, y]

    # DevTools reach the sandbox's Chromium through its relay (no pidfd_open under
    # gVisor; a host client's SO_PEERCRED shows the sandbox's uid).
    deadline = time.monotonic() + 60
    while True:
        async with gw.http.get(base + "/cdp/json/version", headers=gw.auth) as resp:
            status, body = resp.status, await resp.text()
        if status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert status == 200 and '"Browser": "Chrome/' in body, (status, body)

    # The picture is the desktop, not a black frame (capture works across the boundary).
    deadline = time.monotonic() + 60
    while True:
        image = Image.open(io.BytesIO(await screenshot(gw, sid))).convert("RGB")
        colors = image.getcolors(1 << 20) or []
        if len(colors) > 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert image.size == (1280, 720)
    assert len(colors) > 1, colors
    agent_log = (gw.state_dir / "sessions" / sid / "logs" / "agent.log").read_text()
    assert re.search(r"capture :0: backend (xshm|xgetimage)", agent_log), agent_log[-2000:]

    await gw.stop(sid)
    await gw.wait_status(sid, {"stopped"})
    async with gw.http.get(base + "/recording", headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.read())[4:8] == b"ftyp"


async def test_gvisor_isolation(gvisor_gateway: Gateway,
                                docker_client: docker.DockerClient) -> None:
    gw = gvisor_gateway
    gateway_port = int(gw.base_url.rsplit(":", 1)[1])
    server = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0)
    host_port = server.sockets[0].getsockname()[1]
    try:
        none_s, egress_s = await asyncio.gather(gw.create_running(network="none"),
                                                gw.create_running(network="egress"))
        for s in (none_s, egress_s):
            app = pod(docker_client, gw.state_dir, s["session_id"], "app")
            host = app.attrs["HostConfig"]
            user = app.attrs["Config"]["User"]
            uid = int(user.split(":")[0])
            assert host["Runtime"] == "runsc"
            assert uid != 0
            assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in host["SecurityOpt"]
            assert host["Memory"] == 2048 * 1024 * 1024
            assert host["NanoCpus"] == 1_000_000_000
            assert host["PidsLimit"] == 512 * GVISOR_PIDS_FACTOR
            code, out = await run_in(app, (
                "import ctypes, os\n"
                "print('uid', os.getuid())\n"
                "st=open('/proc/self/status').read()\n"
                "print([l for l in st.splitlines() if l.startswith(('CapEff','CapBnd'))])\n"
                "print('nnp', ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))\n"), user=user)
            assert code == 0, out
            assert f"uid {uid}" in out, out
            assert "CapEff:\\t0000000000000000" in out and "CapBnd:\\t0000000000000000" in out
            assert "nnp 1" in out, out
            # Read-only root: even the image's root user (no capabilities) cannot write.
            code, out = await run_in(app, (
                "try: open('/usr/evil','w')\n"
                "except OSError as e: print('errno', e.errno)\n"), user="0")
            assert out == "errno 30", out

        none_app = pod(docker_client, gw.state_dir, none_s["session_id"], "app")
        code, out = await run_in(none_app, "import socket; print(socket.if_nameindex())",
                                 user=none_app.attrs["Config"]["User"])
        assert code == 0 and re.fullmatch(r"\[\(\d+, 'lo'\)\]", out), out

        a = pod(docker_client, gw.state_dir, egress_s["session_id"], "app")
        a_user = a.attrs["Config"]["User"]
        (net_info,) = a.attrs["NetworkSettings"]["Networks"].values()
        own_ip, host_on_bridge = net_info["IPAddress"], net_info["Gateway"]
        # The session's network works (it reaches a listener at its own address) ...
        listener = a.exec_run(["python3", "-c",
                               "import socket\n"
                               "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                               "s.bind(('0.0.0.0',8765)); s.listen(8)\n"
                               "while True: c,_=s.accept(); c.close()\n"],
                              user=a_user, detach=True)
        assert listener is not None
        deadline = time.monotonic() + 30
        while True:
            code, out = await run_in(a, connect_code(own_ip, 8765), user=a_user)
            if code == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert out == "open", out
        # ... but neither the gateway nor any other host service.
        targets = [(address, port) for address in sorted({host_on_bridge, *_host_addresses()})
                   for port in (gateway_port, host_port)]
        results = await asyncio.gather(*(run_in(a, connect_code(address, port), user=a_user)
                                         for address, port in targets))
        for target, (code, out) in zip(targets, results, strict=True):
            assert code == 1 and out.startswith("blocked"), (target, out)
        # The runtime agent's folder (its unix socket) is not in the app container.
        code, out = await run_in(a, "import os; print(os.path.exists('/run/vr/agent.sock'))",
                                 user=a_user)
        assert out == "False", out

        # Chromium keeps its own sandbox under gVisor: no --no-sandbox, and its
        # renderers run under its seccomp-bpf filter (gVisor implements seccomp).
        deadline = time.monotonic() + 90
        while True:
            code, out = await run_in(none_app, (
                "import os\n"
                "for p in os.listdir('/proc'):\n"
                "  if not p.isdigit(): continue\n"
                "  try:\n"
                "    cmd=open(f'/proc/{p}/cmdline','rb').read().split(b'\\0')\n"
                "    st=open(f'/proc/{p}/status').read()\n"
                "  except OSError: continue\n"
                "  if b'chromium' in cmd[0]:\n"
                "    sec=[l for l in st.splitlines() if l.startswith('Seccomp')]\n"
                "    print(sec, b' '.join(cmd).decode())\n"),
                user=none_app.attrs["Config"]["User"])
            if "--type=renderer" in out or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert "--no-sandbox" not in out, out
        renderers = [line for line in out.splitlines() if "--type=renderer" in line]
        assert renderers, out
        assert all(line.startswith("['Seccomp:\\t2']") for line in renderers), out

        for s in (none_s, egress_s):
            await gw.stop(s["session_id"])
        for s in (none_s, egress_s):
            await gw.wait_status(s["session_id"], {"stopped"})
    finally:
        server.close()
        await server.wait_closed()


async def test_gvisor_xterm_takes_typed_keys(tmp_path: Path,
                                             docker_client: docker.DockerClient) -> None:
    """xterm runs under gVisor: a command typed into it runs, and the typing shows.

    (gVisor of 2022 fails every open of /dev/tty with EIO; xterm's pty handshake
    checks the pty with one, so container/session.sh turns the handshake off.)
    """
    async for gw in in_process_gateway(tmp_path, backend="docker", docker_runtime="runsc",
                                       apps=("fluxbox", "xterm")):
        session = await gw.create_running(resolution="1024x768", network="none")
        sid = session["session_id"]
        assert pod(docker_client, gw.state_dir, sid, "app").attrs["HostConfig"]["Runtime"] == "runsc"
        base = gw.url(f"/api/visual-sessions/{sid}")
        marker = gw.state_dir / "sessions" / sid / "home" / "Downloads" / "typed.txt"
        app_log = gw.state_dir / "sessions" / sid / "logs" / "app.log"
        deadline = time.monotonic() + 90
        while not marker.exists():  # until xterm is up and focused (one more try each round)
            assert time.monotonic() < deadline, app_log.read_text()[-2000:]
            before = await screenshot(gw, sid)
            for action in ({"action": "left_click", "coordinate": [400, 300]},
                           {"action": "type", "text": "echo typed-$((6*7)) > ~/Downloads/typed.txt\n"}):
                async with gw.http.post(base + "/actions", headers=gw.auth, json=action) as resp:
                    assert resp.status == 200, await resp.text()
            await asyncio.sleep(2)
        assert marker.read_text() == "typed-42\n"
        after = await screenshot(gw, sid)
        assert Image.open(io.BytesIO(after)).size == (1024, 768)
        changed = (Image.open(io.BytesIO(before)).convert("RGB").tobytes()
                   != Image.open(io.BytesIO(after)).convert("RGB").tobytes())
        assert changed, "the typed command did not change the screen"
        assert "open ttydev" not in app_log.read_text()
        await gw.stop(sid)
        await gw.wait_status(sid, {"stopped"})
    assert owned(docker_client, tmp_path / "state") == ([], [])
