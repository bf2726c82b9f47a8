"""A real Docker Swarm on this machine: the host engine as manager, worker nodes as
Docker-in-Docker containers made from the project's own Debian base.

* The node image (``node.Dockerfile``) is ``debian:bookworm-slim`` (which
  ``container/build.sh`` makes with debootstrap when no registry answers) plus
  Debian's ``docker.io``; it is built once and tagged by the hash of its inputs.
* Nodes are containers with every capability but CAP_SYS_RESOURCE, no seccomp or
  AppArmor confinement and all devices: ``--privileged`` asks runc for every
  capability, which fails on hosts whose bounding set lacks one (this one).
* There is no registry: the session image is ``docker save``d on the host and
  ``docker load``ed into each node.
* The host engine joins swarm mode only for the test (``swarm init`` when it was
  inactive, ``swarm leave --force`` at the end); a host already in a swarm is used
  as it is and left in it.

:func:`stop_cluster` removes every service, secret, node, container and volume
the run made, even after a failure, and returns what it could not remove.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NODE_IMAGE = "visual-runtime-swarm-node"
TEST_LABEL = "org.visual-runtime.swarm-test"
SESSION_LABEL = "visual-runtime=session"
HEARTBEAT_S = 1


@dataclass
class Worker:
    name: str
    node_id: str = ""
    address: str = ""


@dataclass
class Cluster:
    client: docker.DockerClient
    run_id: str
    initialised: bool
    workers: list[Worker] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    state_dir: Path | None = None
    """The state folder of the gateways that serve this cluster."""
    had_gwbridge: bool = True
    """docker_gwbridge existed before the run (swarm init makes it; leave keeps it)."""

    def worker(self, node_id: str) -> Worker:
        return next(w for w in self.workers if w.node_id == node_id)


def _node_inputs() -> list[Path]:
    return [HERE / "node.Dockerfile", HERE / "node-entry.sh",
            ROOT / "container" / "seccomp-chromium.json"]


def node_image(client: docker.DockerClient) -> str:
    """Build (once per content) the worker node image on the local Debian base."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in _node_inputs())).hexdigest()[:12]
    tag = f"{NODE_IMAGE}:{digest}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.get("debian:bookworm-slim")
    except docker.errors.ImageNotFound:
        subprocess.run([str(ROOT / "container" / "build.sh"), "base"], check=True)
    with tempfile.TemporaryDirectory() as ctx:
        for path in _node_inputs():
            shutil.copy(path, Path(ctx) / ("Dockerfile" if path.name == "node.Dockerfile"
                                            else path.name))
        subprocess.run(["nice", "-n", "10", "docker", "build", "-q", "-t", tag, ctx],
                       check=True, stdout=subprocess.DEVNULL)
    for old in client.images.list(name=NODE_IMAGE):  # earlier versions only take disk
        if tag not in old.tags:
            try:
                client.images.remove(old.id, force=True)
            except docker.errors.APIError:
                pass
    return tag


def _exec(name: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", name, *argv], capture_output=True, text=True,
                          timeout=timeout)


def _bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on docker0, where the worker nodes reach the manager."""
    ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    if ipam.get("Gateway"):
        return str(ipam["Gateway"])
    return str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))


def start_cluster(client: docker.DockerClient, workers: int, session_image: str,
                  run_id: str, made: list[Cluster] | None = None) -> Cluster:
    """The host as manager plus *workers* Docker-in-Docker nodes labelled for sessions.

    The cluster is appended to *made* as soon as it exists, so a caller that is
    interrupted meanwhile can still remove it; a failure here removes it itself."""
    t0 = time.monotonic()
    image = node_image(client)
    state = client.info()["Swarm"]
    manager_addr = _bridge_gateway(client)
    initialised = False
    had_gwbridge = bool(client.networks.list(names=["docker_gwbridge"]))
    if state.get("LocalNodeState") == "inactive":
        client.swarm.init(advertise_addr=manager_addr, listen_addr=f"{manager_addr}:2377",
                          dispatcher_heartbeat_period=HEARTBEAT_S * 1_000_000_000)
        initialised = True
    elif not state.get("ControlAvailable"):
        raise AssertionError("this docker engine is in a swarm but not a manager")
    cluster = Cluster(client, run_id, initialised, had_gwbridge=had_gwbridge)
    cluster.timings["node_image_s"] = time.monotonic() - t0
    if made is not None:
        made.append(cluster)
    try:
        _add_workers(cluster, workers, image, session_image, manager_addr)
    except BaseException:
        stop_cluster(cluster, [])
        raise
    cluster.timings["cluster_s"] = time.monotonic() - t0
    return cluster


def _add_workers(cluster: Cluster, workers: int, image: str, session_image: str,
                 manager_addr: str) -> None:
    client = cluster.client
    run_id = cluster.run_id
    client.swarm.reload()
    token = client.swarm.attrs["JoinTokens"]["Worker"]
    for i in range(workers):
        name = f"vr-swarm-{run_id}-{i + 1}"
        cluster.workers.append(Worker(name))
        client.volumes.create(name, labels={TEST_LABEL: run_id})
        client.containers.run(
            image, detach=True, name=name, hostname=name, labels={TEST_LABEL: run_id},
            cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            device_cgroup_rules=["a *:* rwm"],
            volumes={name: {"bind": "/var/lib/docker", "mode": "rw"}})
    for worker in cluster.workers:
        deadline = time.monotonic() + 60
        while _exec(worker.name, "docker", "info").returncode != 0:
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", "--tail", "30", worker.name],
                                      capture_output=True, text=True).stderr
                raise AssertionError(f"dockerd did not start in {worker.name}: {logs}")
            time.sleep(0.5)
    t1 = time.monotonic()
    for worker in cluster.workers:
        # No registry: the session image travels as a tar stream.
        done = subprocess.run(
            f"docker save {session_image} | docker exec -i {worker.name} docker load -q",
            shell=True, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
    cluster.timings["image_load_s"] = time.monotonic() - t1
    for worker in cluster.workers:
        joined = _exec(worker.name, "docker", "swarm", "join", "--token", token,
                       f"{manager_addr}:2377")
        assert joined.returncode == 0, joined.stderr
        worker.address = client.api.inspect_container(worker.name)["NetworkSettings"]["IPAddress"]
    deadline = time.monotonic() + 60
    while True:
        nodes = {n.attrs["Description"]["Hostname"]: n for n in client.nodes.list()}
        if all(w.name in nodes and nodes[w.name].attrs["Status"]["State"] == "ready"
               for w in cluster.workers):
            break
        assert time.monotonic() < deadline, "workers did not become ready"
        time.sleep(0.5)
    for worker in cluster.workers:
        node = nodes[worker.name]
        worker.node_id = node.id
        spec = dict(node.attrs["Spec"])
        spec["Labels"] = {**spec.get("Labels", {}), "visual-runtime": "session"}
        node.update(spec)


def set_availability(cluster: Cluster, worker: Worker, availability: str) -> None:
    node = cluster.client.nodes.get(worker.node_id)
    spec = dict(node.attrs["Spec"])
    spec["Availability"] = availability
    node.update(spec)


def set_label(cluster: Cluster, worker: Worker, key: str, value: str) -> None:
    node = cluster.client.nodes.get(worker.node_id)
    spec = dict(node.attrs["Spec"])
    spec["Labels"] = {**spec.get("Labels", {}), key: value}
    node.update(spec)


def kill_worker(worker: Worker) -> None:
    subprocess.run(["docker", "kill", worker.name], check=True, capture_output=True)


def swarm_objects(client: docker.DockerClient, gateway_label: str) -> dict[str, list[str]]:
    """Services and secrets a gateway (by its label) still owns."""
    label = {"label": f"visual-runtime.gateway={gateway_label}"}
    return {
        "services": [s["Spec"]["Name"] for s in client.api.services(filters=label)],
        "secrets": [s["Spec"]["Name"] for s in client.api.secrets(filters=label)],
    }


def node_leftovers(worker: Worker) -> list[str]:
    """Containers, volumes and non-default networks left on a live worker."""
    out = []
    for argv in (["docker", "ps", "-aq"], ["docker", "volume", "ls", "-q"]):
        done = _exec(worker.name, *argv)
        out += [f"{argv[1]} {line}" for line in done.stdout.split()]
    return out


def stop_cluster(cluster: Cluster, gateway_labels: list[str]) -> list[str]:
    """Remove everything the run made; return what is still there afterwards."""
    client = cluster.client
    for gw in gateway_labels:
        for kind, names in swarm_objects(client, gw).items():
            for name in names:
                try:
                    (client.api.remove_service if kind == "services"
                     else client.api.remove_secret)(name)
                except docker.errors.APIError:
                    pass
    by_host = {n.attrs["Description"]["Hostname"]: n.id for n in client.nodes.list()} \
        if client.info()["Swarm"].get("LocalNodeState") == "active" else {}
    for worker in cluster.workers:
        subprocess.run(["docker", "rm", "-f", "-v", worker.name], capture_output=True)
        worker.node_id = worker.node_id or by_host.get(worker.name, "")
        if worker.node_id:
            try:
                client.api.remove_node(worker.node_id, force=True)
            except docker.errors.APIError:
                pass
    for worker in cluster.workers:
        try:
            client.volumes.get(worker.name).remove(force=True)
        except docker.errors.NotFound:
            pass
    if cluster.initialised:
        client.swarm.leave(force=True)
        if not cluster.had_gwbridge:
            for net in client.networks.list(names=["docker_gwbridge"]):
                try:
                    net.remove()
                except docker.errors.APIError:
                    pass
    left: list[str] = []
    left += [c.name for c in client.containers.list(all=True,
                                                    filters={"label": f"{TEST_LABEL}={cluster.run_id}"})]
    left += [v.name for v in client.volumes.list(filters={"label": f"{TEST_LABEL}={cluster.run_id}"})]
    if not cluster.initialised:
        worker_names = {w.name for w in cluster.workers}
        left += [n.attrs["Description"]["Hostname"] for n in client.nodes.list()
                 if n.attrs["Description"]["Hostname"] in worker_names]
    else:
        if client.info()["Swarm"].get("LocalNodeState") != "inactive":
            left.append("the host is still in swarm mode")
        if not cluster.had_gwbridge and client.networks.list(names=["docker_gwbridge"]):
            left.append("network docker_gwbridge")
    for gw in gateway_labels:
        if client.info()["Swarm"].get("LocalNodeState") == "active":
            objects = swarm_objects(client, gw)
            left += objects["services"] + objects["secrets"]
    return left


def task_of(client: docker.DockerClient, session_id: str) -> dict[str, Any]:
    """The swarm task of a session's service."""
    services = client.api.services(filters={"label": f"visual-runtime.session={session_id}"})
    assert services, f"no swarm service for session {session_id}"
    tasks: list[dict[str, Any]] = [dict(t) for t in
                                   client.api.tasks(filters={"service": services[0]["ID"]})]
    assert tasks, f"no swarm task for session {session_id}"
    return max(tasks, key=lambda t: str(t.get("CreatedAt", "")))
