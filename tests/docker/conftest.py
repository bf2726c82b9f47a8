"""Fixtures for the docker backend: a real engine, the session image, a gateway.

The engine and the image come from ``scripts/docker-setup.sh`` (CI runs it
before the tests). Missing either fails the test; it is never skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import docker
import docker.errors
import pytest

from gateway.appkeys import MANAGER
from gateway.config import GatewayConfig
from tests.gateway_fixtures import Gateway, in_process_gateway, owned

IMAGE = GatewayConfig().docker_image


def pod_uids(gw: Gateway, sid: str) -> tuple[int, int]:
    """(app, agent) uids of a live session's pod, from the gateway's handle."""
    handle = gw.extra["app"][MANAGER].get(sid).pod
    return int(handle["uid_app"]), int(handle["uid_agent"])


@pytest.fixture
async def docker_gateway(tmp_path: Path, docker_client: docker.DockerClient
                         ) -> AsyncIterator[Gateway]:
    """An in-process gateway with the docker backend and full desktops (Chromium)."""
    async for gw in in_process_gateway(tmp_path, backend="docker"):
        yield gw
    assert owned(docker_client, tmp_path / "state") == ([], [])
