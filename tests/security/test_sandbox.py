"""The app sandbox holds against a hostile app: every claim is an attempt made from
INSIDE a live session's app sandbox, as its user (see ``helpers.run_in_app``).

Each test first shows that its probe works where the access is allowed (own
files, a listener inside the sandbox, the host side of the same path), so a
broken probe cannot pass as a blocked one; then that each forbidden attempt
fails, and for the right reason (errno).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.appkeys import MANAGER
from tests.gateway_fixtures import API_TOKEN, Gateway, gateway_config, owned, wait_no_pod_processes
from tests.recording.helpers import wait_file
from tests.security.helpers import app_user, probe

pytestmark = pytest.mark.timeout(180)

BLOCKED_TCP = {"ECONNREFUSED", "TIMEOUT", "ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL"}
"""How a forbidden TCP connect may fail: refused (nothing listens in the sandbox's
own namespace), dropped by the host firewall (egress), no route (network none), or
no source address of that family (IPv6 in a v4-only container)."""


@pytest.fixture(params=["local", "docker"])
async def exposed_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    """An in-process gateway listening on EVERY host address (:: dual stack), the worst
    case for reachability from a sandbox; sessions run fluxbox-less xterm."""
    backend = str(request.param)
    client = request.getfixturevalue("docker_client") if backend == "docker" else None
    config = gateway_config(tmp_path / "state", backend=backend, apps=("xterm",))
    app = create_app(config, API_TOKEN)
    server = TestServer(app, host="::", port=0)  # dual stack: every v4 and v6 address
    http = TestClient(server)
    try:
        await http.start_server()
        gw = Gateway(f"http://127.0.0.1:{server.port}", API_TOKEN, config.state_dir, http.session)
        gw.extra.update(app=app, backend=backend, port=server.port)
        yield gw
    finally:
        await http.close()
    assert wait_no_pod_processes(config.state_dir) == []
    if client is not None:
        assert owned(client, config.state_dir) == ([], [])


async def _upload(gw: Gateway, sid: str, name: str, data: bytes) -> None:
    async with gw.http.put(gw.url(f"/api/visual-sessions/{sid}/files/{name}"), data=data,
                           headers=gw.auth) as resp:
        assert resp.status in (200, 201), await resp.text()


def _host_addresses() -> list[str]:
    text = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True,
                          check=True).stdout
    addrs = {line.split()[3].split("/")[0] for line in text.splitlines()}
    return sorted(a for a in addrs if not a.startswith("fe80:"))


def _status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


async def test_probe_runs_like_the_apps(tmp_path: Path, light_gateway: Gateway) -> None:
    """The local probe is as confined as the sandbox's own xterm: same namespaces,
    cgroup, uid, capabilities and no-new-privs (so the other tests mean something)."""
    gw = light_gateway
    sid = (await gw.create_running(resolution="640x480", network="egress"))["session_id"]
    result = await probe(gw, sid, r'''
def facts(pid):
    ns = {k: os.readlink(f"/proc/{pid}/ns/{k}") for k in ("mnt", "pid", "ipc", "uts", "net", "cgroup")}
    status = open(f"/proc/{pid}/status").read()
    return {"ns": ns, "status": status, "cgroup": open(f"/proc/{pid}/cgroup").read(),
            "root": sorted(os.listdir(f"/proc/{pid}/root/"))}
xterm = [p for p in os.listdir("/proc") if p.isdigit()
         and open(f"/proc/{p}/cmdline", "rb").read().startswith(b"xterm")]
print(json.dumps({"self": facts("self"), "xterm": facts(xterm[0])}))
''')
    me, xterm = result["self"], result["xterm"]
    assert me["ns"] == xterm["ns"]
    assert me["cgroup"] == xterm["cgroup"]
    assert me["root"] == xterm["root"]
    a, b = _status(me["status"]), _status(xterm["status"])
    for key in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                "NoNewPrivs", "Seccomp", "Seccomp_filters"):
        assert a[key] == b[key], key
    assert a["Uid"].split() == [str(app_user(gw, sid))] * 4
    await gw.stop(sid)


async def test_cannot_read_the_gateway_state(exposed_gateway: Gateway) -> None:
    gw = exposed_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    await _upload(gw, sid, "own.txt", b"mine")
    state = gw.state_dir.resolve()
    (state / "api-token").write_text(API_TOKEN)  # as a gateway without --token keeps it
    os.chmod(state / "api-token", 0o600)
    targets = {
        "api_token": str(state / "api-token"),
        "db": str(gw.extra["app"][MANAGER]._config.db_file.resolve()),
        "own_log": str(state / "sessions" / sid / "logs" / "events.ndjson"),
        "shadow": "/etc/shadow",
        "via_init_root": f"/proc/1/root{state}/api-token",
    }
    for path in targets.values():
        if not path.startswith("/proc/"):
            assert Path(path).exists(), path  # the host side has them
    result = await probe(gw, sid, r'''
out = {k: read(v) for k, v in ARGS["targets"].items()}
out["own"] = read("/home/user/Downloads/own.txt")
out["state_dir"] = listdir(ARGS["state"])
print(json.dumps(out))
''', {"targets": targets, "state": str(state)})
    assert result.pop("own") == "ok"
    assert result.pop("shadow") == "EACCES"
    # Not in the sandbox's filesystem at all; /proc/1 is the sandbox's root-owned init.
    assert result.pop("via_init_root") in {"EACCES", "ENOENT"}
    assert result == {"api_token": "ENOENT", "db": "ENOENT", "own_log": "ENOENT",
                      "state_dir": "ENOENT"}
    await gw.stop(sid)


async def test_cannot_read_another_sessions_files_recording_or_sockets(
        exposed_gateway: Gateway) -> None:
    gw = exposed_gateway
    s1 = (await gw.create_running(resolution="640x480"))["session_id"]
    s2 = (await gw.create_running(resolution="640x480"))["session_id"]
    await _upload(gw, s1, "own.txt", b"mine")
    await _upload(gw, s2, "secret.txt", b"theirs")
    manager = gw.extra["app"][MANAGER]
    s2_dir = manager.session_dir(manager.get(s2)).resolve()
    runtime = manager._config.runtime_dir
    recording = s2_dir / "recording" / "recording.mp4"
    await wait_file(recording, lambda d: len(d) > 0)
    agent_sock = manager._backend.agent_socket(manager.get(s2).pod)
    own_sock = manager._backend.agent_socket(manager.get(s1).pod)
    assert agent_sock.exists() and own_sock.exists()
    files = {
        "secret_host_path": str(s2_dir / "home" / "Downloads" / "secret.txt"),
        "secret_in_own_folder": "/home/user/Downloads/secret.txt",
        "recording": str(recording),
        "events": str(s2_dir / "logs" / "events.ndjson"),
        "other_run_dir": str(runtime / s2),
    }
    sockets = {"other_agent": str(agent_sock), "own_agent": str(own_sock),
               "other_vnc": str(agent_sock.with_name("vnc.sock"))}
    result = await probe(gw, s1, r'''
out = {k: read(v) for k, v in ARGS["files"].items()}
out["own"] = read("/home/user/Downloads/own.txt")
out["runtime_dir"] = listdir(ARGS["runtime"])
out["sessions_dir"] = listdir(ARGS["sessions"])
out.update({k: unix(v) for k, v in ARGS["sockets"].items()})
# The probe's unix connect works: the session's own X socket (shared with the agent).
out["own_x"] = unix("/tmp/.X11-unix/X0")
print(json.dumps(out))
''', {"files": files, "sockets": sockets, "runtime": str(runtime),
      "sessions": str(s2_dir.parent)})
    assert result.pop("own") == "ok"
    assert result.pop("own_x") == "ok"
    assert set(result.values()) == {"ENOENT"}, result
    await gw.stop(s1)
    await gw.stop(s2)


async def test_cannot_reach_the_gateway_port(exposed_gateway: Gateway) -> None:
    gw = exposed_gateway
    port = int(gw.extra["port"])
    addresses = _host_addresses()
    # From the host, the gateway answers on every one of them: the targets are real.
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family) as s:
            s.settimeout(3)
            s.connect((address, port))
    results: dict[str, dict[str, Any]] = {}
    for network in ("egress", "none"):
        sid = (await gw.create_running(resolution="640x480", network=network))["session_id"]
        results[network] = await probe(gw, sid, r'''
import threading
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(4)
out = {"inside": tcp("127.0.0.1", server.getsockname()[1])}
def run(a):
    out[a] = tcp(a, ARGS["port"])
threads = [threading.Thread(target=run, args=(a,)) for a in ARGS["addresses"]]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(out))
''', {"addresses": addresses, "port": port})
        await gw.stop(sid)
    for network, result in results.items():
        assert result.pop("inside") == "ok", network  # the probe's connect works
        assert set(result) == set(addresses)
        assert set(result.values()) <= BLOCKED_TCP, (network, result)


async def test_cannot_see_host_processes(exposed_gateway: Gateway) -> None:
    gw = exposed_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    result = await probe(gw, sid, r'''
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError as e:
            cmd = "?" + str(e.errno)
        procs[p] = cmd
env = {}
for p in procs:
    try:
        env[p] = base64.b64encode(open(f"/proc/{p}/environ", "rb").read()).decode()
    except OSError:
        pass
out = {"procs": procs, "environ": env, "self": str(os.getpid())}
print(json.dumps(out))
''')
    procs: dict[str, str] = result["procs"]
    del procs[result["self"]]  # the probe's own code names what it looks for
    # The sandbox's init is its bubblewrap (root-owned; its argv shows host paths of
    # the session's folders, not their contents: see the gaps in docs/api-extensions.md).
    init = procs.pop("1")
    assert init.startswith(("bwrap ", "/sbin/docker-init", "/usr/bin/tini", "tini")), init
    cmds = " | ".join(procs.values())
    assert "Xvfb" in cmds and "xterm" in cmds, cmds  # the probe sees its own pod
    assert len(procs) < 20, procs
    host_markers = ["pytest", "-m gateway", "agent_side", "dockerd", "containerd", "sshd",
                    "systemd", str(os.getpid())]
    for marker in host_markers:
        assert marker not in cmds, (marker, cmds)
    assert str(os.getpid()) not in procs or "pytest" not in procs[str(os.getpid())]
    # Nothing the sandbox can read holds a token (view, control or the API token).
    secrets_ = [API_TOKEN, *session["tokens"].values()]
    for pid, blob in result["environ"].items():
        raw = base64.b64decode(blob)
        assert not any(t.encode() in raw for t in secrets_), pid
    assert not any(t in cmds for t in secrets_)
    await gw.stop(sid)


USERNS_PROBE = r'''
import errno, json, os
def attempt(fn):
    try:
        fn()
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"
def write_etc():
    with open("/etc/passwd", "a"):
        pass
def setns_parent():
    fd = os.open(f"/proc/{os.getppid()}/ns/mnt", os.O_RDONLY)
    try:
        os.setns(fd, 0)
    finally:
        os.close(fd)
print(json.dumps({"uid": os.getuid(), "shadow": attempt(lambda: open("/etc/shadow").read(1)),
                  "kill_init": attempt(lambda: os.kill(1, 0)), "write_etc": attempt(write_etc),
                  "chown_xsocket_dir": attempt(lambda: os.chown("/tmp/.X11-unix", 0, 0)),
                  "setns_parent": attempt(setns_parent)}))
'''
"""Run as the "root" of a user namespace the app makes with ``unshare -r``."""


async def test_has_no_capabilities_and_cannot_gain_them(exposed_gateway: Gateway) -> None:
    gw = exposed_gateway
    sid = (await gw.create_running(resolution="640x480"))["session_id"]
    uid = app_user(gw, sid)
    result = await probe(gw, sid, r'''
import ctypes, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def mount():
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
def run(*argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    return {"code": p.returncode, "out": p.stdout.strip(), "err": p.stderr.strip()[-200:]}
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
open("/home/user/Downloads/mine", "w").close()
out = {
    "status": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                              "NoNewPrivs")},
    "chmod_own": attempt(lambda: os.chmod("/home/user/Downloads/mine", 0o600)),
    "chown_own_to_self": attempt(lambda: os.chown("/home/user/Downloads/mine", os.getuid(), -1)),
    "chown_to_root": attempt(lambda: os.chown("/home/user/Downloads/mine", 0, 0)),
    "setuid_root": attempt(lambda: os.setuid(0)),
    "mount": attempt(mount),
    "unshare_user": run("unshare", "-r", "python3", "-c", USERNS_PROBE),
    "unshare_mount": run("unshare", "-m", "true"),
    "ping_raw": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()),
}
print(json.dumps(out))
'''.replace("USERNS_PROBE", repr(USERNS_PROBE)))
    assert {k: int(v, 16) if k != "NoNewPrivs" else int(v) for k, v in result["status"].items()} \
        == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0, "NoNewPrivs": 1}
    assert result["chmod_own"] == "ok" and result["chown_own_to_self"] == "ok"  # probe works
    assert result["chown_to_root"] == "EPERM"
    assert result["setuid_root"] == "EPERM"
    assert result["mount"] == "EPERM"
    assert result["ping_raw"] == "EPERM"
    assert result["unshare_mount"]["code"] != 0, result["unshare_mount"]  # needs CAP_SYS_ADMIN
    # A user namespace IS allowed: Chromium's own sandbox is built on it (docs/docker.md;
    # no --no-sandbox). Its "root" holds capabilities only over namespaces it creates:
    # nothing of the sandbox's (or the host's) opens to it.
    inner = result["unshare_user"]
    assert inner["code"] == 0, inner
    facts = json.loads(inner["out"])
    assert facts.pop("write_etc") in {"EACCES", "EROFS"}  # host root's file / read-only
    assert facts.pop("setns_parent") in {"EACCES", "EPERM"}
    kill_init = facts.pop("kill_init")
    if gw.extra["backend"] == "local":
        assert kill_init == "EPERM"  # the sandbox's init is root's bubblewrap
    # (docker: the container's init runs as the app user anyway)
    assert facts == {"uid": 0, "shadow": "EACCES", "chown_xsocket_dir": "EPERM"}
    assert uid != 0
    await gw.stop(sid)

