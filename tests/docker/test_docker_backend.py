"""The docker backend on a real engine: lifecycle, isolation, security, re-adoption."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import docker
from docker.models.containers import Container

from gateway.backends.docker import gateway_label
from tests.docker.conftest import owned, pod_uids
from tests.gateway_fixtures import (
    Gateway,
    in_process_gateway,
    start_served_gateway,
    stop_served_gateway,
)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def screenshot(gw: Gateway, sid: str) -> bytes:
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


def pod(client: docker.DockerClient, state_dir: Path, sid: str, role: str) -> Container:
    return client.containers.get(f"vr-{gateway_label(state_dir)[:8]}-{sid}-{role}")


async def run_in(container: Container, code: str, user: str | None = None) -> tuple[int, str]:
    """Run Python *code* in *container* (Debian's python3 in the image), as its own user
    unless *user* is given."""
    def run() -> tuple[int, str]:
        code_, out = container.exec_run(["python3", "-c", code],
                                        user=user or container.attrs["Config"]["User"])
        return code_, out.decode(errors="replace").strip()
    return await asyncio.to_thread(run)


def connect_code(host: str, port: int) -> str:
    return ("import socket,sys\n"
            "s=socket.socket(); s.settimeout(2)\n"
            f"try: s.connect(({host!r},{port})); print('open')\n"
            "except OSError as e: print('blocked', e); sys.exit(1)\n")


async def test_create_screenshot_stop_and_nothing_left(
        docker_gateway: Gateway, docker_client: docker.DockerClient) -> None:
    gw = docker_gateway
    session = await gw.create_running(resolution="1280x720")
    sid = session["session_id"]
    assert png_size(await screenshot(gw, sid)) == (1280, 720)
    containers, networks = owned(docker_client, gw.state_dir)
    assert sorted(containers) == sorted(c.name for c in (
        pod(docker_client, gw.state_dir, sid, "app"), pod(docker_client, gw.state_dir, sid, "agent")))
    # The shared folder is the container's ~/Downloads, owned by the session user.
    files = gw.state_dir / "sessions" / sid / "home" / "Downloads"
    assert files.stat().st_uid == pod_uids(gw, sid)[0]
    app = pod(docker_client, gw.state_dir, sid, "app")
    code, out = await run_in(app, "open('/home/user/Downloads/from-inside.txt','w').write('hi')")
    assert code == 0, out
    assert (files / "from-inside.txt").read_text() == "hi"
    ended = await gw.stop(sid)
    assert ended["status"] in ("stopping", "stopped")
    await gw.wait_status(sid, {"stopped"})
    assert owned(docker_client, gw.state_dir) == ([], [])
    logs = gw.state_dir / "sessions" / sid / "logs"
    assert (logs / "app.log").exists() and (logs / "agent.log").stat().st_size > 0


async def test_security_options_are_applied(
        docker_gateway: Gateway, docker_client: docker.DockerClient) -> None:
    gw = docker_gateway
    sid = (await gw.create_running(network="none"))["session_id"]
    app = pod(docker_client, gw.state_dir, sid, "app")
    agent = pod(docker_client, gw.state_dir, sid, "agent")
    host: dict[str, Any] = app.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    uid_app, uid_agent = pod_uids(gw, sid)
    assert app.attrs["Config"]["User"] == f"{uid_app}:{uid_app}"
    assert host["PidsLimit"] >= 512
    assert host["Memory"] == 2048 * 1024 * 1024
    assert host["NanoCpus"] == 1_000_000_000
    assert host["IpcMode"] == "shareable"
    assert host["NetworkMode"] == "none"
    assert "no-new-privileges" in host["SecurityOpt"]
    seccomp = [o for o in host["SecurityOpt"] if o.startswith("seccomp=")]
    assert len(seccomp) == 1 and '"unshare"' in seccomp[0] and '"chroot"' in seccomp[0]
    assert "/tmp" in host["Tmpfs"] and "/home/user" in host["Tmpfs"]
    ahost: dict[str, Any] = agent.attrs["HostConfig"]
    assert ahost["ReadonlyRootfs"] is True and ahost["CapDrop"] == ["ALL"]
    assert agent.attrs["Config"]["User"] == f"{uid_agent}:{uid_agent}"
    assert ahost["IpcMode"] == f"container:{app.id}"
    assert ahost["NetworkMode"] == "host"
    assert "no-new-privileges" in ahost["SecurityOpt"]

    # Inside: no capabilities, no new privileges, a read-only root.
    code, out = await run_in(app, (
        "import os\n"
        "st=open('/proc/self/status').read()\n"
        "print([l for l in st.splitlines() if l.startswith(('CapEff','CapBnd','NoNewPrivs'))])\n"
        "try: open('/usr/evil','w')\n"
        "except OSError as e: print('ro', e.errno)\n"))
    assert code == 0, out
    assert "CapEff:\\t0000000000000000" in out and "CapBnd:\\t0000000000000000" in out, out
    assert "NoNewPrivs:\\t1" in out and "ro 30" in out, out

    # Chromium runs with its own sandbox: no --no-sandbox, and its renderers sit
    # in namespaces of their own (the zygote's user namespace differs from ours).
    deadline = time.monotonic() + 60
    while True:
        code, out = await run_in(app, (
            "import os\n"
            "me=os.readlink('/proc/self/ns/user')\n"
            "for p in os.listdir('/proc'):\n"
            "  if not p.isdigit(): continue\n"
            "  try:\n"
            "    cmd=open(f'/proc/{p}/cmdline','rb').read().split(b'\\0')\n"
            "    ns=os.readlink(f'/proc/{p}/ns/user')\n"
            "  except OSError: continue\n"
            "  if b'chromium' in cmd[0]: print(ns!=me, b' '.join(cmd).decode())\n"))
        if "--type=renderer" in out or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert "--no-sandbox" not in out, out
    renderers = [line for line in out.splitlines() if "--type=renderer" in line]
    assert renderers, out
    assert all(line.startswith("True") for line in renderers), out
    await gw.stop(sid)


async def test_network_none_and_egress_isolation(
        docker_gateway: Gateway, docker_client: docker.DockerClient) -> None:
    gw = docker_gateway
    gateway_port = int(gw.base_url.rsplit(":", 1)[1])
    # A listener on every host address: what a session must not reach.
    server = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0)
    host_port = server.sockets[0].getsockname()[1]
    try:
        none_s, egress_a, egress_b = await asyncio.gather(
            gw.create_running(network="none"), gw.create_running(network="egress"),
            gw.create_running(network="egress"))
        none_app = pod(docker_client, gw.state_dir, none_s["session_id"], "app")
        a = pod(docker_client, gw.state_dir, egress_a["session_id"], "app")
        b = pod(docker_client, gw.state_dir, egress_b["session_id"], "app")

        # none: loopback only.
        code, out = await run_in(none_app, "import os; print(sorted(os.listdir('/sys/class/net')))")
        assert out == "['lo']", out

        # egress: an interface and a default route of its own bridge network.
        for c in (a, b):
            c.reload()
            assert c.attrs["HostConfig"]["NetworkMode"].endswith("-net"), c.attrs["HostConfig"]
        code, out = await run_in(a, "print(open('/proc/net/route').read())")
        assert "\neth0\t00000000\t" in out, out
        nets = a.attrs["NetworkSettings"]["Networks"]
        (net_info,) = nets.values()
        host_on_bridge = net_info["Gateway"]
        b.reload()
        (b_info,) = b.attrs["NetworkSettings"]["Networks"].values()
        b_ip = b_info["IPAddress"]

        # Another session: b listens, reaches itself; a cannot reach it.
        listener = b.exec_run(["python3", "-c",
                               "import socket,time\n"
                               "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                               "s.bind(('0.0.0.0',8765)); s.listen(8)\n"
                               "while True: c,_=s.accept(); c.close()\n"],
                              user=b.attrs["Config"]["User"], detach=True)
        assert listener is not None
        deadline = time.monotonic() + 20
        while True:
            code, out = await run_in(b, connect_code(b_ip, 8765))
            if code == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert out == "open", out
        code, out = await run_in(a, connect_code(b_ip, 8765))
        assert code == 1 and out.startswith("blocked"), out

        # The host: neither the gateway port nor any other host service.
        targets = [(address, port) for address in sorted({host_on_bridge, *_host_addresses()})
                   for port in (gateway_port, host_port)]
        results = await asyncio.gather(*(run_in(a, connect_code(address, port))
                                         for address, port in targets))
        for target, (code, out) in zip(targets, results, strict=True):
            assert code == 1 and out.startswith("blocked"), (target, out)
        # ... while the listener itself is up (reachable from the host).
        _, writer = await asyncio.open_connection("127.0.0.1", host_port)
        writer.close()
        await writer.wait_closed()

        for s in (none_s, egress_a, egress_b):
            await gw.stop(s["session_id"])
        for s in (none_s, egress_a, egress_b):
            await gw.wait_status(s["session_id"], {"stopped"})
        assert owned(docker_client, gw.state_dir) == ([], [])
    finally:
        server.close()
        await server.wait_closed()


def _host_addresses() -> list[str]:
    """IPv4 addresses of the host's interfaces other than loopback."""
    import fcntl
    out = []
    for name in sorted(p.name for p in Path("/sys/class/net").iterdir()):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError:
            continue
        finally:
            s.close()
        address = socket.inet_ntoa(raw[20:24])
        if not address.startswith("127."):
            out.append(address)
    return out


async def test_readoption_after_gateway_crash(
        tmp_path: Path, docker_client: docker.DockerClient) -> None:
    state_dir = tmp_path / "state"
    proc, base_url = await asyncio.to_thread(
        start_served_gateway, state_dir, "--backend", "docker", "--apps", "fluxbox,xterm")
    sid = ""
    try:
        import aiohttp

        from tests.gateway_fixtures import API_TOKEN
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(base_url + "/api/visual-sessions", json={"resolution": "800x600"},
                                 headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                sid = (await resp.json())["session_id"]
            async with http.get(base_url + f"/api/visual-sessions/{sid}?wait=running",
                                headers=headers) as resp:
                assert (await resp.json())["status"] == "running"
    finally:
        # A crash: no clean-up runs, the pod stays.
        await asyncio.to_thread(stop_served_gateway, proc, signal.SIGKILL)
    assert len(owned(docker_client, state_dir)[0]) == 2

    async for gw in in_process_gateway(tmp_path, backend="docker", apps=("fluxbox", "xterm")):
        session = await gw.get(sid)
        assert session["status"] == "running", session
        assert png_size(await screenshot(gw, sid)) == (800, 600)
        await gw.stop(sid)
        await gw.wait_status(sid, {"stopped"})
    assert owned(docker_client, state_dir) == ([], [])
