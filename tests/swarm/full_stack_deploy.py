"""``docker stack deploy -c deploy/swarm-stack.yml`` run for real on the test swarm.

Not collected in CI (the file name does not start with ``test_``): it builds the
gateway image, which CI's swarm test does not need. The benchmarks' full mode
runs it (``benchmarks/swarm.py``), or by hand::

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/swarm/full_stack_deploy.py

The stack file is deployed as it is, plus an override file with what a test must
change: a free port, a known API token, the state folder in the test's temporary
folder, reservations that fit the test's worker. There is no registry: the
gateway image exists on the manager (the host), where the stack places the
gateway, and the session image is loaded into the worker as in the other tests.
A session is created through the deployed gateway, runs on the worker, is
stopped; then ``docker stack rm`` leaves no service, secret, container or
network behind.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import docker
import pytest
import yaml

from gateway.backends.docker import gateway_label
from tests.gateway_fixtures import API_TOKEN, Gateway
from tests.swarm.cluster import Cluster, node_leftovers, swarm_objects, task_of
from tests.swarm.test_swarm_cluster import RESERVE_CPUS
from tests.swarm.test_swarm_cluster import cluster as cluster  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "swarm-stack.yml"
STATE_IN_CONTAINER = Path("/var/lib/visual-runtime")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stack_objects(client: docker.DockerClient, stack: str) -> list[str]:
    label = {"label": f"com.docker.stack.namespace={stack}"}
    return ([f"service {s['Spec']['Name']}" for s in client.api.services(filters=label)]
            + [f"network {n['Name']}" for n in client.api.networks(filters=label)]
            + [f"container {c['Id'][:12]}" for c in client.api.containers(all=True, filters=label)]
            + [f"secret {s['Spec']['Name']}" for s in client.api.secrets(filters=label)])


@pytest.fixture
def stack(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, int]]:  # noqa: F811
    subprocess.run([str(ROOT / "container" / "build.sh"), "gateway"], check=True,
                   capture_output=True, timeout=1800)
    name = f"vr-stack-{cluster.run_id}"
    port = _free_port()
    state = tmp_path / "stack-state"
    state.mkdir()
    override = tmp_path / "override.yml"
    override.write_text(yaml.safe_dump({
        "version": "3.8",
        "services": {"gateway": {
            "environment": {
                "VISUAL_RUNTIME_PORT": str(port), "VISUAL_RUNTIME_TOKEN": API_TOKEN,
                "VISUAL_RUNTIME_SWARM_RESERVE_CPUS": str(RESERVE_CPUS),
                "VISUAL_RUNTIME_SWARM_RESERVE_MEMORY_MB": "512",
                "VISUAL_RUNTIME_MAX_SESSIONS": "2"},
            "volumes": [f"{state}:{STATE_IN_CONTAINER}"],
        }}}))
    deployed = subprocess.run(
        ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(STACK),
         "-c", str(override), name], capture_output=True, text=True, timeout=120)
    try:
        assert deployed.returncode == 0, deployed.stderr
        yield name, port
    finally:
        subprocess.run(["docker", "stack", "rm", name], capture_output=True, timeout=120)
        client = cluster.client
        for kind, names in swarm_objects(client, gateway_label(STATE_IN_CONTAINER)).items():
            for obj in names:  # sessions a failed run left behind
                (client.api.remove_service if kind == "services" else client.api.remove_secret)(obj)


@pytest.mark.timeout(1800)
async def test_the_deployed_stack_serves_sessions(cluster: Cluster,  # noqa: F811
                                                  stack: tuple[str, int]) -> None:
    name, port = stack
    client = cluster.client
    service = client.api.services(filters={"name": f"{name}_gateway"})[0]
    mounts = {m["Target"]: m.get("Source") for m in
              service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Mounts", [])}
    assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock", mounts
    async with aiohttp.ClientSession() as http:
        gw = Gateway(f"http://127.0.0.1:{port}", API_TOKEN, Path("/nonexistent"), http)
        deadline = time.monotonic() + 180
        while True:  # the task starts on the manager, then the gateway binds its port
            try:
                async with http.get(gw.url("/healthz")) as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "service", "logs", "--tail", "40",
                                       f"{name}_gateway"], capture_output=True, text=True)
                pytest.fail(f"the stack's gateway did not answer: {logs.stdout}{logs.stderr}")
            await asyncio.sleep(1)
        task = task_of_service(client, f"{name}_gateway")
        manager = client.info()["Swarm"]["NodeID"]
        assert task["NodeID"] == manager, "the gateway ran outside the manager"

        created = await gw.create(network="none")
        sid = created["session_id"]
        session = await gw.wait_status(sid, {"running", "failed", "stopped"}, timeout=180)
        assert session["status"] == "running", session
        assert session["backend"] == "swarm"
        placed = task_of(client, sid)["NodeID"]
        assert placed in {w.node_id for w in cluster.workers}
        async with http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot"),
                            headers=gw.auth) as resp:
            assert resp.status == 200 and (await resp.read()).startswith(b"\x89PNG")
        stopped = await gw.stop(sid)
        assert stopped["status"] == "stopped", stopped
        assert swarm_objects(client, gateway_label(STATE_IN_CONTAINER)) == {
            "services": [], "secrets": []}

    removed = subprocess.run(["docker", "stack", "rm", name], capture_output=True, text=True,
                             timeout=120)
    assert removed.returncode == 0, removed.stderr
    for _ in range(120):
        if not _stack_objects(client, name):
            break
        await asyncio.sleep(0.5)
    assert _stack_objects(client, name) == []
    for worker in cluster.workers:
        for _ in range(60):
            if not node_leftovers(worker):
                break
            await asyncio.sleep(0.5)
        assert node_leftovers(worker) == [], worker.name


def task_of_service(client: docker.DockerClient, service: str) -> dict[str, object]:
    tasks = [dict(t) for t in client.api.tasks(filters={"service": service})]
    assert tasks, f"no task of {service}"
    return max(tasks, key=lambda t: str(t.get("CreatedAt", "")))
