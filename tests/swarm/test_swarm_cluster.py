"""``--backend swarm`` on a real multi-node swarm built on this machine (tests/swarm/cluster.py).

CI runs the two-node version: the host engine as manager (it takes no sessions:
its default seccomp profile is Docker's, see docs/swarm.md) and one Docker-in-Docker
worker. With ``VR_SWARM_WORKERS=2`` (the benchmarks' full mode runs it so) the same
test runs on three nodes and also checks spreading and draining.

One gateway process serves the cluster (``visual-runtime serve --backend swarm``) and
is killed with SIGKILL halfway, then started again on the same state: it must re-adopt
the live sessions. Sessions stream to an aiortc viewer (WHEP) and to headless
Chromium (the viewer page), take actions, record; the pod's isolation is read from the
node's /proc; a worker is killed and only its sessions fail, with a reason naming it;
the recording copied before the node died is playable. Nothing is left on any node.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import docker
import pytest
from playwright.async_api import Browser

from gateway.backends.docker import gateway_label
from gateway.config import GatewayConfig
from tests.cdp.test_cdp_playwright import FORM
from tests.gateway_fixtures import (
    API_TOKEN,
    Gateway,
    start_served_gateway,
    stop_served_gateway,
)
from tests.swarm.cluster import (
    TEST_LABEL,
    Cluster,
    kill_worker,
    node_leftovers,
    set_availability,
    set_label,
    start_cluster,
    stop_cluster,
    swarm_objects,
    task_of,
)
from tests.swarm.egress_probe import (
    in_sandbox,
    node_firewall,
    probe,
    requests_seen,
    sandbox_links,
    start_listener,
)
from tests.viewer.pages import open_viewer, wait_connected
from tests.webrtc.whep_client import Typist, WhepViewer

WORKERS = int(os.environ.get("VR_SWARM_WORKERS", "1"))
RESERVE_CPUS = 0.9
"""Each node reports the host's 2 cores: two sessions per worker fit, a third does not."""


@pytest.fixture(scope="module")
def cluster(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    run_id = secrets.token_hex(3)
    state_dir = tmp_path_factory.mktemp("swarm") / "state"
    made: Cluster | None = None
    try:
        made = start_cluster(docker_client, WORKERS, GatewayConfig().docker_image, run_id)
        made.state_dir = state_dir
        print(f"\nswarm: {WORKERS} worker(s) + host manager ready in "
              f"{made.timings['cluster_s']:.1f} s (image load {made.timings['image_load_s']:.1f} s)")
        yield made
    finally:
        if made is not None:
            left = stop_cluster(made, [gateway_label(state_dir)])
            assert left == [], f"left behind: {left}"


def serve(state_dir: Path, tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Gateway]:
    proc, url = start_served_gateway(
        state_dir, "--backend", "swarm", "--runtime-dir", str(tmp / "run"),
        "--max-sessions", "8", "--swarm-reserve-cpus", str(RESERVE_CPUS),
        "--swarm-reserve-memory-mb", "512", "--apps", "fluxbox,xterm,chromium", *extra)
    # Keep reading its output (into a file), or a full pipe would block the gateway.
    log = (tmp / "gateway.log").open("ab")
    threading.Thread(target=_drain, args=(proc, log), daemon=True).start()
    return proc, Gateway(url, API_TOKEN, state_dir, aiohttp.ClientSession())


def _drain(proc: subprocess.Popen[bytes], log: BinaryIO) -> None:
    out = proc.stdout
    assert out is not None
    with log:
        try:
            for line in out:
                log.write(line)
                log.flush()
        except (OSError, ValueError):
            pass  # closed by stop_served_gateway
        finally:
            out.close()


@pytest.fixture
async def served(cluster: Cluster, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    assert cluster.state_dir is not None
    state_dir = cluster.state_dir
    holder: dict[str, Any] = {}
    holder["proc"], holder["gw"] = serve(state_dir, tmp_path)
    try:
        yield holder
    finally:
        await holder["gw"].http.close()
        stop_served_gateway(holder["proc"])


async def create_running(gw: Gateway, timeout: float = 120, **body: Any) -> dict[str, Any]:
    created = await gw.create(**{"network": "none", **body})
    sid = created["session_id"]
    session = await gw.wait_status(sid, {"running", "failed", "stopped"}, timeout=timeout)
    assert session["status"] == "running", session
    session["tokens"] = created["tokens"]
    return session


async def action(gw: Gateway, sid: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"), json=body,
                            headers=gw.auth) as resp:
        return resp.status, await resp.json()


def node_exec(worker: str, *argv: str) -> str:
    done = subprocess.run(["docker", "exec", worker, *argv], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def pod_processes(worker: str, container_id: str) -> dict[str, dict[str, str]]:
    """Name -> /proc status fields (and the interfaces of its network namespace)
    of the pod's Xvfb, Chromium and runtime agent, read from inside the pod."""
    script = (
        "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
        "case \"$c\" in Xvfb\\ *|python*-m\\ agent_side*|/usr/lib/chromium/chromium\\ *) "
        "echo \"== $c\"; grep -E '^(Uid|CapEff|NoNewPrivs):' $p/status; "
        "echo \"Ifaces: $(tail -n +3 $p/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')\";; "
        "esac; done")
    out = node_exec(worker, "docker", "exec", container_id, "sh", "-c", script)
    procs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in out.splitlines():
        if line.startswith("== "):
            cmd = line[3:]
            key = ("agent" if "agent_side" in cmd else "xvfb" if "Xvfb" in cmd
                   else "chromium")
            current = procs.setdefault(key, {"cmd": cmd})
        elif current is not None and ":" in line:
            k, v = line.split(":", 1)
            current[k.strip()] = v.strip()
    return procs


@pytest.mark.timeout(600)
async def test_egress_sessions_on_a_worker(cluster: Cluster, tmp_path: Path) -> None:
    """``network: "egress"`` on a worker: the app sandbox reaches a listener on the
    worker's outside (a container on the host's bridge), but neither the manager
    (where the gateway runs), the worker itself (other sessions' runtime agents),
    another session's sandbox nor a network on ``--egress-deny``; and nothing of
    it stays on the node once the sessions stop. Runs before the test that kills
    the worker."""
    assert cluster.state_dir is not None
    client = cluster.client
    image = GatewayConfig().docker_image
    labels = {TEST_LABEL: cluster.run_id}
    allowed, allowed_ip = start_listener(client, image, f"vr-swarm-{cluster.run_id}-out", labels)
    denied, denied_ip = start_listener(client, image, f"vr-swarm-{cluster.run_id}-deny", labels)
    proc, gw = serve(cluster.state_dir, tmp_path, "--egress-deny", f"{denied_ip}/32")
    try:
        first, second = await asyncio.gather(  # at once: CI's time
            create_running(gw, network="egress",
                           start_url=f"http://{allowed_ip}:8080/from-the-sandbox"),
            create_running(gw, network="egress"))
        tasks = [task_of(client, s["session_id"]) for s in (first, second)]
        worker = cluster.worker(tasks[0]["NodeID"])
        other = cluster.worker(tasks[1]["NodeID"])  # the same one in CI (one worker)
        pods = [t["Status"]["ContainerStatus"]["ContainerID"] for t in tasks]

        # The session's own Chromium fetched its start page over the egress link.
        for _ in range(120):
            if "/from-the-sandbox" in requests_seen(allowed):
                break
            await asyncio.sleep(0.5)
        assert "GET /from-the-sandbox" in requests_seen(allowed), requests_seen(allowed)

        # The second session's sandbox serves on 8081 (as its uid 10001); the first
        # must not reach it, nor anything else but the allowed listener.
        in_sandbox(other.name, pods[1], "python3", "-m", "http.server", "8081", detach=True)
        links = sandbox_links(other.name, pods[1])
        sandbox_ip = re.findall(r"inet (10\.232\.\S+)/30", links)
        assert len(sandbox_ip) == 1, links
        assert not re.search(r"vrwp\d+\s+inet6", links), links  # no IPv6 on the link
        for _ in range(40):  # its own loopback says when the server is up
            if probe(other.name, pods[1], ["127.0.0.1:8081"])["127.0.0.1:8081"] == "open":
                break
            await asyncio.sleep(0.25)
        manager = str(client.info()["Swarm"]["NodeAddr"])
        gateway_port = gw.base_url.rsplit(":", 1)[1].strip("/")
        ports = []
        for task in tasks:
            args = task["Spec"]["ContainerSpec"]["Args"]
            ports.append(args[args.index("--listen") + 1].rsplit(":", 1)[1])
        targets = {
            "allowed": f"{allowed_ip}:8080",
            "deny list": f"{denied_ip}:8080",
            "manager (gateway)": f"{manager}:{gateway_port}",
            "manager (swarm)": f"{manager}:2377",
            "own node (own agent)": f"{worker.address}:{ports[0]}",
            "other session's agent": f"{other.address}:{ports[1]}",
        }
        if other is worker:  # sandboxes on other nodes have no route from here at all
            targets["other sandbox"] = f"{sandbox_ip[0]}:8081"
        seen = probe(worker.name, pods[0], list(targets.values()))
        verdict = {name: seen[target] for name, target in targets.items()}
        print(f"swarm egress: {verdict}")
        assert verdict == {name: "open" if name == "allowed" else "dropped" for name in targets}
        assert "GET" not in requests_seen(denied)
        assert node_firewall(worker.name) != ""  # the rules are there while it runs

        for s in (first, second):
            await gw.stop(s["session_id"])
        for node in {worker.name: worker, other.name: other}.values():
            for _ in range(60):
                if not node_firewall(node.name) and not node_leftovers(node):
                    break
                await asyncio.sleep(0.5)
            assert node_firewall(node.name) == "", f"egress rules or links left on {node.name}"
            assert node_leftovers(node) == []
    finally:
        await gw.http.close()
        stop_served_gateway(proc)
        for container in (allowed, denied):
            container.remove(force=True)


@pytest.mark.timeout(900)  # building the cluster (image load) is most of it: ~3 min here
async def test_sessions_across_the_swarm(cluster: Cluster, served: dict[str, Any],
                                         browser: Browser, tmp_path: Path) -> None:
    client = cluster.client
    gw: Gateway = served["gw"]
    for w in cluster.workers:  # viewers reach each worker at its docker0 address only
        set_label(cluster, w, "visual-runtime.ice-addresses", w.address)
    # doctor --backend swarm sees the labelled workers and what they can place.
    doctor = subprocess.run(
        [sys.executable, "-m", "gateway", "doctor", "--json", "--backend", "swarm",
         "--state-dir", str(tmp_path / "doctor"), "--port", "0", "--max-sessions", "8",
         "--swarm-reserve-cpus", str(RESERVE_CPUS), "--swarm-reserve-memory-mb", "512"],
        capture_output=True, text=True, timeout=120)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["swarm manager"]["ok"] and checks["session nodes"]["ok"], checks
    assert f"{WORKERS} ready and active node(s)" in checks["session nodes"]["detail"]
    assert f"room for {2 * WORKERS} more session(s)" in checks["cluster capacity"]["detail"]
    assert not checks["max sessions"]["ok"]  # 8 promised, 2 per worker placeable
    assert "no warm pool and no runtime agent restarts" in checks["pod features"]["detail"]
    t0 = time.monotonic()
    first = await create_running(gw, resolution="1280x720", enable_recording=True)
    print(f"swarm: create -> running {time.monotonic() - t0:.1f} s")
    second = await create_running(gw)
    sids = [first["session_id"], second["session_id"]]
    placed = {sid: task_of(client, sid)["NodeID"] for sid in sids}
    worker_ids = {w.node_id for w in cluster.workers}
    assert set(placed.values()) <= worker_ids, "a session ran outside the labelled workers"
    if WORKERS >= 2:
        assert len(set(placed.values())) == 2, f"sessions did not spread: {placed}"

    # What the cluster can place: 2 per worker at 0.9 reserved cores each.
    extra = [await create_running(gw) for _ in range(2 * WORKERS - 2)]
    async with gw.http.post(gw.url("/api/visual-sessions"), json={"network": "none"},
                            headers=gw.auth) as resp:
        problem = await resp.json()
        assert resp.status == 503, problem
        assert "no room" in problem["detail"] and resp.headers.get("Retry-After")
    for s in extra:
        await gw.stop(s["session_id"])

    # Streams: an aiortc viewer over WHEP and headless Chromium on the viewer page.
    viewer = WhepViewer(gw, sids[0], first["tokens"]["view"], codec="h264")
    try:
        await viewer.connect()
        offered = set(re.findall(r"a=candidate:\S+ \d \S+ \d+ (\S+) \d+ typ host",
                                 viewer.answer_sdp))
        assert offered == {cluster.worker(placed[sids[0]]).address}, viewer.answer_sdp
        async with Typist(gw, sids[0]):
            frames = await viewer.wait_frames(5, within=60)
        assert {(f.width, f.height) for f in frames} == {(1280, 720)}
    finally:
        await viewer.close()
    page = await open_viewer(browser, gw, sids[1], second["tokens"]["control"])
    try:
        transport = await wait_connected(page, timeout_s=60)
        assert transport == "webrtc", await page.evaluate("vrViewer.attempts")
    finally:
        await page.close()
    status, body = await action(gw, sids[1], {"action": "mouse_move", "coordinate": [200, 150]})
    assert status == 200 and body["cursor"] == [200, 150], body
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sids[1]}/screenshot"),
                           headers=gw.auth) as resp:
        assert resp.status == 200 and (await resp.read()).startswith(b"\x89PNG")

    # DevTools over the link: Playwright drives the session's Chromium through /cdp,
    # with the errors of one machine (a view token 403, a second client 409).
    cdp_url = gw.url(f"/api/visual-sessions/{sids[1]}/cdp")
    async with gw.http.get(f"{cdp_url}/json/version", headers={
            "Authorization": f"Bearer {second['tokens']['view']}"}) as resp:
        assert resp.status == 403, await resp.text()
    cdp = await browser.browser_type.connect_over_cdp(cdp_url, headers=gw.auth)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as busy:
            await gw.http.ws_connect(cdp_url, headers=gw.auth)
        assert busy.value.status == 409
        context = cdp.contexts[0]
        page = context.pages[0] if context.pages else await context.new_page()
        await page.set_content(FORM)
        await page.fill("#name", "swarm")
        await page.click("#go")
        await page.wait_for_function("document.getElementById('out').textContent !== ''")
        assert await page.text_content("#out") == "hello swarm"
    finally:
        await cdp.close()

    # The shared folder stays in the pod on the worker; the files API reaches it over
    # the link with the errors of one machine. The session user's own 0600 file (as
    # Chromium writes downloads) comes through; a symlink it planted does not.
    pod2 = task_of(client, sids[1])
    pod2_node = cluster.worker(pod2["NodeID"]).name
    pod2_id = pod2["Status"]["ContainerStatus"]["ContainerID"]
    files = gw.url(f"/api/visual-sessions/{sids[1]}/files")
    payload = os.urandom(300_000)
    async with gw.http.put(f"{files}/in/report.bin", data=payload, headers=gw.auth) as resp:
        assert resp.status == 201, await resp.text()
    node_exec(pod2_node, "docker", "exec", "-u", "10001", pod2_id, "sh", "-c",
              "cd /tmp/user/Downloads && umask 077 && echo mine > private.txt "
              "&& ln -s /etc/passwd link")
    owner = node_exec(pod2_node, "docker", "exec", pod2_id, "stat", "-c", "%u",
                      "/tmp/user/Downloads/in/report.bin")
    assert owner.split() == ["10001"]  # stored as the session user's, in the pod
    async with gw.http.get(files, headers=gw.auth) as resp:
        listed = {f["path"]: f["size"] for f in (await resp.json())["files"]}
    assert listed == {"in/report.bin": 300_000, "private.txt": 5}, listed
    async with gw.http.get(f"{files}/in/report.bin", headers=gw.auth) as resp:
        assert resp.status == 200 and await resp.read() == payload
    async with gw.http.get(f"{files}/in/report.bin",
                           headers={**gw.auth, "Range": "bytes=10-19"}) as resp:
        assert resp.status == 206 and await resp.read() == payload[10:20]
        assert resp.headers["Content-Range"] == "bytes 10-19/300000"
    async with gw.http.get(f"{files}/private.txt", headers=gw.auth) as resp:
        assert resp.status == 200 and await resp.read() == b"mine\n"
    for path, status in (("link", 400), ("nothing.txt", 404), ("back\\slash", 400)):
        async with gw.http.get(f"{files}/{path}", headers=gw.auth) as resp:
            problem = await resp.json()
            assert resp.status == status and problem["status"] == status, (path, problem)
    async with gw.http.get(files, headers={
            "Authorization": f"Bearer {second['tokens']['view']}"}) as resp:
        assert resp.status == 403

    # Isolation, read inside the pod on its node.
    task = task_of(client, sids[0])
    worker = cluster.worker(task["NodeID"]).name
    procs = pod_processes(worker, task["Status"]["ContainerStatus"]["ContainerID"])
    assert procs["xvfb"]["Uid"].split()[0] == "10001" and procs["xvfb"]["CapEff"] == "0" * 16
    assert procs["xvfb"]["Ifaces"].split() == ["lo"], procs["xvfb"]
    assert procs["chromium"]["Ifaces"].split() == ["lo"]
    assert procs["agent"]["Uid"].split()[0] == "10002" and procs["agent"]["CapEff"] == "0" * 16
    assert procs["agent"]["NoNewPrivs"] == "1" and procs["xvfb"]["NoNewPrivs"] == "1"
    assert "lo" in procs["agent"]["Ifaces"] and len(procs["agent"]["Ifaces"].split()) > 1
    mode = node_exec(worker, "docker", "exec", task["Status"]["ContainerStatus"]["ContainerID"],
                     "stat", "-c", "%u %a", "/run/secrets/vr-link-secret", "/run/secrets/vr-link-tls")
    assert mode.split() == ["10002", "400", "10002", "400"]

    # The gateway dies (SIGKILL) and comes back on the same state: both re-adopted.
    served["proc"].send_signal(signal.SIGKILL)
    served["proc"].wait()
    await gw.http.close()
    await asyncio.sleep(1)
    served["proc"], gw = serve(gw.state_dir, tmp_path)
    served["gw"] = gw
    for sid in sids:
        session = await gw.get(sid)
        assert session["status"] == "running", session
    status, body = await action(gw, sids[0], {"action": "type", "text": "echo readopted\n"})
    assert status == 200, body

    if WORKERS >= 2:
        # Draining the second session's node fails it and sends new sessions elsewhere.
        drained = cluster.worker(placed[sids[1]])
        set_availability(cluster, drained, "drain")
        failed = await gw.wait_status(sids[1], {"failed"}, timeout=30)
        assert drained.name in failed["error"] and "drain" in failed["error"], failed
        third = await create_running(gw)
        placed[third["session_id"]] = task_of(client, third["session_id"])["NodeID"]
        assert placed[third["session_id"]] != drained.node_id
        sids.append(third["session_id"])
        set_availability(cluster, drained, "active")
        # Active again, the drained worker takes the next session (it runs the fewest).
        fourth = await create_running(gw)
        placed[fourth["session_id"]] = task_of(client, fourth["session_id"])["NodeID"]
        assert placed[fourth["session_id"]] == drained.node_id
        sids.append(fourth["session_id"])

    # Killing the first session's node fails only its sessions, within seconds.
    await asyncio.sleep(3)  # a few more recorded fragments
    victim = cluster.worker(placed[sids[0]])
    running = [sid for sid in sids if (await gw.get(sid))["status"] == "running"]
    on_victim = [sid for sid in running if placed[sid] == victim.node_id]
    others = [sid for sid in running if sid not in on_victim]
    killed_at = time.monotonic()
    kill_worker(victim)
    for sid in on_victim:
        failed = await gw.wait_status(sid, {"failed"}, timeout=60)
        assert victim.name in failed["error"], failed
    print(f"swarm: node killed -> its {len(on_victim)} session(s) failed in "
          f"{time.monotonic() - killed_at:.1f} s: {failed['error'][:160]}")
    for sid in others:
        assert (await gw.get(sid))["status"] == "running"
    if WORKERS >= 2:
        assert others, "a session on another worker should have outlived the killed one"
        status, body = await action(gw, others[0], {"action": "mouse_move",
                                                    "coordinate": [10, 10]})
        assert status == 200, body

    # Its shared folder went with the node: 409, as docs/api-extensions.md says.
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sids[0]}/files"),
                           headers=gw.auth) as resp:
        assert resp.status == 409 and "stayed on the node" in (await resp.json())["detail"]

    # The recording copied before the node died plays.
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sids[0]}/recording"),
                           headers=gw.auth) as resp:
        assert resp.status == 200, await resp.text()
        video = await resp.read()
    path = tmp_path / "recording.mp4"
    path.write_bytes(video)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    assert probe.returncode == 0 and float(probe.stdout) >= 3, probe
    logs = gw.state_dir / "sessions" / sids[0] / "logs" / "agent.log"
    assert "runtime agent serving" in logs.read_text()

    for sid in others:
        await gw.stop(sid)
    stop_served_gateway(served["proc"])
    assert swarm_objects(client, gateway_label(gw.state_dir)) == {"services": [], "secrets": []}
    for w in cluster.workers:
        if w is not victim:
            for _ in range(60):
                if not node_leftovers(w):
                    break
                await asyncio.sleep(0.5)
            assert node_leftovers(w) == [], w.name
