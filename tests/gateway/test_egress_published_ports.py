"""An egress session cannot reach a port the host published with Docker (issue 20, H4).

Docker publishes a port with a DNAT rule in ``nat PREROUTING``: the packet's
destination is rewritten to the container before any filter rule sees it,
so it crosses FORWARD, not INPUT, and the session's "no host services" rule
never applied. Here a real container (the session image, no registry) is
published on the egress session's host-side address; the host itself reaches
it (the port is live), the session does not.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator

import docker
import pytest

from gateway.appkeys import MANAGER
from gateway.config import GatewayConfig
from tests.gateway_fixtures import Gateway
from tests.security.helpers import probe

pytestmark = pytest.mark.timeout(240)
SERVER = "import http.server as h; h.ThreadingHTTPServer(('', 8000), h.BaseHTTPRequestHandler)" \
         ".serve_forever()"


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


def _wait_open(host: str, port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{host}:{port} never opened"
            time.sleep(0.2)


async def test_published_container_port_is_not_reachable(
        light_gateway: Gateway, docker_client: docker.DockerClient) -> None:
    gw = light_gateway
    sid = (await gw.create_running(resolution="640x480", network="egress"))["session_id"]
    egress = gw.extra["app"][MANAGER].get(sid).pod["egress"]
    host_ip, port = egress["host_ip"], 20000 + secrets.randbelow(20000)
    container = docker_client.containers.run(
        GatewayConfig().docker_image, ["python3", "-c", SERVER], detach=True, remove=True,
        name=f"vrtest-published-{secrets.token_hex(3)}",
        ports={"8000/tcp": (host_ip, port)}, user="65534:65534")
    try:
        _wait_open(host_ip, port)  # the host reaches the published port: it is live
        result = await probe(gw, sid, """
args = json.loads(sys.argv[1])
print(json.dumps({t: tcp(t.split(":")[0], int(t.split(":")[1])) for t in args["targets"]}))
""", {"targets": [f"{host_ip}:{port}"]})
        assert result == {f"{host_ip}:{port}": "TIMEOUT"}, result
    finally:
        container.stop(timeout=2)
    await gw.stop(sid)
