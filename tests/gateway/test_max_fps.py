"""``--max-fps``: the gateway's frame-rate cap reaches every session's runtime agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.appkeys import MANAGER
from gateway.config import GatewayConfig
from tests.gateway_fixtures import in_process_gateway


@pytest.mark.parametrize("bad", [0, 121, -5])
def test_out_of_range_is_refused(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ValueError, match="max_fps"):
        GatewayConfig(state_dir=tmp_path, max_fps=bad)


async def test_the_cap_reaches_the_runtime_agent(tmp_path: Path) -> None:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), max_fps=24):
        session = await gw.create_running(resolution="640x480")
        manager = gw.extra["app"][MANAGER]
        stats = await manager.agent(manager.get(session["session_id"])).stats()
        assert stats["media"]["fps"]["cap"] == 24
        await gw.stop(session["session_id"])
