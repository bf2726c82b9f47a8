"""What an egress swarm session's app sandbox can reach, checked from the inside.

* :func:`start_listener` runs a small HTTP server in a container the test makes
  on the host's Docker bridge (the "internet side" of the test's worker nodes:
  not a node, not the gateway); its log shows which paths were fetched.
* :func:`probe` opens TCP connections from inside a pod's app sandbox (its
  network namespace, as uid 10001, entered from the node) and tells, per target, whether the connection
  was accepted (``open``), answered with a reset (``refused``: the packet reached
  that host) or never answered (``dropped``: stopped by the node's firewall).
  Only ``dropped`` proves the firewall stopped it; ``refused`` means it got through.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import docker

PROBE = r"""
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        out[target] = "open"
    except ConnectionRefusedError:
        out[target] = "refused"
    except (TimeoutError, socket.timeout):
        out[target] = "dropped"
    except OSError as e:
        out[target] = f"error {e.errno}"
    finally:
        s.close()
print(json.dumps(out))
"""


def start_listener(client: docker.DockerClient, image: str, name: str,
                   labels: dict[str, str]) -> tuple[Any, str]:
    """An HTTP server on port 8080 in a new container on the host's bridge: (container, IP)."""
    container = client.containers.run(
        image, ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"], name=name,
        detach=True, labels=labels, read_only=True, cap_drop=["ALL"],
        working_dir="/opt/visual-runtime")
    container.reload()
    return container, str(container.attrs["NetworkSettings"]["IPAddress"])


def requests_seen(container: Any) -> str:
    return str(container.logs().decode(errors="replace"))


def _node_exec(worker: str, *argv: str, timeout: float = 60) -> str:
    done = subprocess.run(["docker", "exec", worker, *argv], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sandbox_pid(worker: str, container_id: str) -> str:
    """The node's PID of the pod's Xvfb: a process of the app sandbox."""
    out = _node_exec(worker, "docker", "top", container_id, "-eo", "pid,comm")
    pids = [line.split()[0] for line in out.splitlines()[1:] if line.split()[1:] == ["Xvfb"]]
    assert pids, f"no Xvfb in pod {container_id}: {out}"
    return pids[0]


def in_sandbox(worker: str, container_id: str, *argv: str, detach: bool = False) -> str:
    """Run *argv* in the app sandbox's network namespace (and the pod's files) as uid
    10001: the node, root, enters the namespaces; the command has no privilege."""
    pid = sandbox_pid(worker, container_id)
    command = ["nsenter", "-t", pid, "-n", "-m", "--", "setpriv", "--reuid=10001",
               "--regid=10001", "--clear-groups", *argv]
    if detach:
        subprocess.Popen(["docker", "exec", "-d", worker, *command],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait(60)
        return ""
    return _node_exec(worker, *command)


def probe(worker: str, container_id: str, targets: list[str]) -> dict[str, str]:
    return dict(json.loads(in_sandbox(worker, container_id, "python3", "-c", PROBE, *targets)))


def sandbox_links(worker: str, container_id: str) -> str:
    """``ip -o addr`` as the app sandbox sees it."""
    return in_sandbox(worker, container_id, "ip", "-o", "addr")


def node_firewall(worker: str) -> str:
    """The node's iptables and ip6tables rules and links that mention a swarm egress link."""
    out = _node_exec(worker, "sh", "-c",
                     "{ iptables-save; iptables-save -t nat; ip6tables-save; ip -o link; } "
                     "2>/dev/null | grep -i vrw || true")
    return out.strip()
