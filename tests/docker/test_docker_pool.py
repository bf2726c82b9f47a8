"""The warm pool on the docker backend: a real engine, the session image.

On docker the network mode is part of the pool key (a container keeps its
network), so a ``/none`` pool serves ``network: "none"`` sessions by RandR resize
and an ``egress`` session starts cold. Nothing is left: containers, networks and
the pool's pods (its session folders) all go with the gateway.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import docker
from PIL import Image

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import in_process_gateway, owned


async def test_docker_pool_claims_by_key_and_leaves_nothing(
        tmp_path: Path, docker_client: docker.DockerClient) -> None:
    async for gw in in_process_gateway(tmp_path, backend="docker", apps=("xterm",),
                                       pool=(("800x600/none", 1),), pool_max_load=1000.0):
        pool = gw.extra["app"][MANAGER].pool
        deadline = time.monotonic() + 180
        while pool.ready_count() < 1:
            assert time.monotonic() < deadline, (pool.describe(), pool.counters)
            await asyncio.sleep(0.2)
        pooled = await gw.create_running(resolution="640x480", network="none")
        cold = await gw.create_running(resolution="640x480", network="egress")
        assert pooled["from_pool"] is True and cold["from_pool"] is False
        for session in (pooled, cold):
            async with gw.http.get(
                    gw.url(f"/api/visual-sessions/{session['session_id']}/screenshot"),
                    headers=gw.auth) as resp:
                assert resp.status == 200, await resp.text()
                assert Image.open(io.BytesIO(await resp.read())).size == (640, 480)
        assert pool.counters["claimed"] == 1 and pool.counters["misses"] == 1
    assert owned(docker_client, tmp_path / "state") == ([], [])
    assert sorted(p.name for p in (tmp_path / "state" / "sessions").iterdir()) == sorted(
        [pooled["session_id"], cold["session_id"]])  # the unclaimed pods' folders are gone
