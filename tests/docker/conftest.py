"""Fixtures for the docker backend: a real engine, the session image, a gateway.

The engine and the image come from ``scripts/docker-setup.sh`` (CI runs it
before the tests). Missing either fails the test; it is never skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from gateway.backends.docker import LABEL_GATEWAY, gateway_label
from gateway.config import GatewayConfig
from tests.gateway_fixtures import Gateway, in_process_gateway

IMAGE = GatewayConfig().docker_image


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as e:
        pytest.fail(f"no docker engine ({e}); run scripts/docker-setup.sh")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} is missing; run scripts/docker-setup.sh")
    yield client
    client.close()


def owned(client: docker.DockerClient, state_dir: Path) -> tuple[list[str], list[str]]:
    """Names of the containers and networks labelled as this gateway's."""
    label = f"{LABEL_GATEWAY}={gateway_label(state_dir)}"
    containers = [c.name for c in client.containers.list(all=True, filters={"label": label})]
    networks = [n.name for n in client.networks.list(filters={"label": label})]
    return containers, networks


@pytest.fixture
async def docker_gateway(tmp_path: Path, docker_client: docker.DockerClient
                         ) -> AsyncIterator[Gateway]:
    """An in-process gateway with the docker backend and full desktops (Chromium)."""
    async for gw in in_process_gateway(tmp_path, backend="docker"):
        yield gw
    assert owned(docker_client, tmp_path / "state") == ([], [])
