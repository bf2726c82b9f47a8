"""The narrow Docker socket (gateway/backends/docker_proxy.py) against the real engine.

1. A docker-backend session runs end to end with the gateway talking only to
   the proxy (``DOCKER_HOST``): the calls it lets through are all the backend needs.
2. From inside the compose gateway image (``visual-runtime-gateway:latest``),
   with the proxy's socket where the engine's socket would be, the Docker SDK
   cannot start a privileged container, bind-mount ``/``, run another image,
   run as root, list or inspect containers that are not Visual Runtime's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from gateway.config import GatewayConfig
from tests.gateway_fixtures import Gateway, in_process_gateway, owned

IMAGE = GatewayConfig().docker_image
GATEWAY_IMAGE = "visual-runtime-gateway:latest"


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "proxy" / "docker.sock"
    with (tmp_path / "proxy.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.backends.docker_proxy", "--listen", str(sock),
             "--image", IMAGE, "--mount-root", str(tmp_path / "state"),
             "--mount-root", str(GatewayConfig().runtime_dir)],
            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 20
    while not sock.exists():
        assert proc.poll() is None, (tmp_path / "proxy.log").read_text()
        assert time.monotonic() < deadline, "the docker proxy did not start"
        time.sleep(0.05)
    try:
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def proxied_gateway(tmp_path: Path, proxy: Path, docker_client: docker.DockerClient,
                          monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy}")
    async for gw in in_process_gateway(tmp_path, backend="docker", apps=("xterm",)):
        yield gw
    assert owned(docker_client, tmp_path / "state") == ([], [])


async def test_a_session_runs_through_the_proxy(proxied_gateway: Gateway, tmp_path: Path) -> None:
    gw = proxied_gateway
    session = await gw.create_running(resolution="640x480", network="egress")
    sid = session["session_id"]
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"), headers=gw.auth,
                            json={"action": "screenshot"}) as resp:
        assert resp.status == 200, await resp.text()
    await gw.stop(sid)
    # The pod's containers went through the proxy, and nothing was refused on the way.
    log = (tmp_path / "proxy.log").read_text()
    assert f"allowed: create app container of session {sid}" in log, log
    assert f"allowed: create agent container of session {sid}" in log, log
    assert "refused" not in log, log


INSIDE = r"""
import json, docker
client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
image, state = IMAGE, STATE
labels = {"visual-runtime.session": "x", "visual-runtime.role": "app",
          "visual-runtime.gateway": "attacker"}
ours = dict(image=image, command=["app"], user="10001:10001", labels=labels,
            security_opt=["no-new-privileges"], detach=True, network_mode="none")
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except docker.errors.APIError as e:
        out[name] = f"{e.status_code} {e.explanation}"
attempt("ping", client.ping)
attempt("privileged", lambda: client.containers.create(**{**ours, "privileged": True}))
attempt("bind_root", lambda: client.containers.create(**ours, mounts=[
    docker.types.Mount("/host", "/", type="bind")]))
attempt("bind_symlink_out", lambda: client.containers.create(**ours, mounts=[
    docker.types.Mount("/host", state + "/escape", type="bind")]))
attempt("other_image", lambda: client.containers.create(
    **{**ours, "image": "debian:bookworm-slim"}))
attempt("root_user", lambda: client.containers.create(**{**ours, "user": "0"}))
attempt("shell_command", lambda: client.containers.create(**{**ours, "command": ["sh"]}))
attempt("cap_add", lambda: client.containers.create(**ours, cap_add=["SYS_ADMIN"]))
attempt("host_pid", lambda: client.containers.create(**ours, pid_mode="host"))
attempt("list_all", lambda: client.containers.list(all=True))
attempt("inspect_foreign", lambda: client.containers.get(FOREIGN))
attempt("exec_foreign", lambda: client.api.exec_create(FOREIGN, "id"))
def ours_created():
    c = client.containers.create(**ours, mounts=[
        docker.types.Mount("/tmp/.X11-unix", state, type="bind")])
    c.remove(force=True)
attempt("ours", ours_created)
print(json.dumps(out))
"""


def test_from_inside_the_gateway_container(proxy: Path, tmp_path: Path,
                                           docker_client: docker.DockerClient) -> None:
    docker_client.images.get(GATEWAY_IMAGE)  # container/build.sh gateway
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    os.symlink("/", state / "escape")
    foreign = docker_client.containers.create("debian:bookworm-slim", command=["true"],
                                              name=f"vrtest-foreign-{tmp_path.name[-8:]}")
    script = INSIDE.replace("IMAGE", repr(IMAGE)).replace("STATE", repr(str(state))) \
        .replace("FOREIGN", repr(foreign.id))
    try:
        output = docker_client.containers.run(
            GATEWAY_IMAGE, entrypoint=["python3", "-c", script], remove=True,
            network_mode="none",
            volumes={str(proxy): {"bind": "/var/run/docker.sock", "mode": "rw"}})
    finally:
        foreign.remove(force=True)
    result = json.loads(output.decode().strip().splitlines()[-1])
    assert result.pop("ping") == "allowed"
    assert result.pop("ours") == "allowed"
    for name, outcome in result.items():
        assert outcome.startswith("403 refused by the Visual Runtime docker proxy"), (name, outcome)
    assert set(result) == {"privileged", "bind_root", "bind_symlink_out", "other_image",
                           "root_user", "shell_command", "cap_add", "host_pid", "list_all",
                           "inspect_foreign", "exec_foreign"}
