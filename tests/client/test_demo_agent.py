"""The scripted demo agent on a full session, and ``visual-runtime demo``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.cli.demo_agent import DemoAgent
from tests.actions.helpers import control, poll
from tests.gateway_fixtures import API_TOKEN, Gateway, wait_no_pod_processes
from visual_runtime_client.client import VisualRuntimeClient


async def test_demo_agent_pauses_for_a_human_and_resumes(gateway: Gateway) -> None:
    gw = gateway
    lines: list[str] = []
    async with VisualRuntimeClient(gw.base_url, API_TOKEN) as client:
        session = await client.create_session(resolution="1024x768")
        assert session.tokens is not None
        token = session.tokens["control"]
        agent = DemoAgent(session, 1024, 768, say=lines.append)
        task = asyncio.create_task(agent.run())
        try:
            await poll(lambda: agent.steps_done >= 6, timeout=60, what="demo steps")
            assert (await control(gw, session.session_id, "take", token))[0] == 200
            await poll(lambda: any("pausing" in line for line in lines), timeout=30,
                       what="the agent to pause")
            paused_at = agent.steps_done
            assert (await control(gw, session.session_id, "release", token))[0] == 200
            await poll(lambda: agent.steps_done > paused_at + 3, timeout=60,
                       what="the agent to resume")
            assert agent.handovers == 1
            assert any("fresh" in line for line in lines)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Between the take and the release no agent action reached the session.
        log = [e for e in await session.logs() if e["type"] in ("control", "action")]
        take = next(i for i, e in enumerate(log) if e["type"] == "control")
        assert log[take]["controller"] == "human"
        assert log[take + 1]["type"] == "control" and log[take + 1]["controller"] == "agent"
        assert any(e["type"] == "action" for e in log[:take])
        assert any(e["type"] == "action" for e in log[take + 2:])
        await session.stop()


def test_visual_runtime_demo_prints_the_viewer_url_and_drives(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", "0", "--state-dir",
         str(tmp_path / "state"), "--token", API_TOKEN, "--minutes", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("driving session" in s for s in seen):
            line = proc.stdout.readline().decode()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
        text = "".join(seen)
        viewer = re.search(r"Open the viewer: (http://\S+/sessions/([\w-]+)/\?token=\S+)", text)
        assert viewer, text
        assert "demo agent: driving session " + viewer.group(2) in text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    assert proc.returncode == 0
    assert wait_no_pod_processes(tmp_path / "state") == []
