"""visual_runtime_client against a real gateway (in-process on a TCP port, and `visual-runtime serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import pytest

from tests.actions.helpers import XTERM_POINT, downloads, poll, read_text
from tests.gateway_fixtures import API_TOKEN, Gateway
from visual_runtime_client import VisualRuntimeClient
from visual_runtime_client.client import (
    Event,
    Forbidden,
    HumanInControl,
    NotFound,
    SessionNotRunning,
    Unauthorized,
    ValidationError,
)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


async def test_round_trip(light_gateway: Gateway) -> None:
    gw = light_gateway
    async with VisualRuntimeClient(gw.base_url, API_TOKEN) as client:
        session = await client.create_session(resolution="800x600", idle_timeout_minutes=0)
        assert session.status == "running"
        assert session.tokens is not None and set(session.tokens) == {"view", "control"}
        assert session.viewer_url().endswith(f"/sessions/{session.session_id}/?token="
                                             + session.tokens["control"])
        assert session.session_id in {s.session_id for s in await client.list_sessions()}
        assert (await client.get_session(session.session_id)).info["resolution"] == "800x600"

        assert _png_size(await session.screenshot()) == (800, 600)
        assert _png_size(await session.view_screenshot()) == (800, 600)
        assert await session.move(*XTERM_POINT) == tuple(XTERM_POINT)
        assert await session.click(310, 210) == (310, 210)
        assert await session.cursor_position() == (310, 210)
        folder = downloads(gw, session.session_id)
        ready = folder / "ready"
        while not ready.exists():  # bash starts a moment after the session runs
            await session.type_text("touch ~/Downloads/ready\n")
            with contextlib.suppress(AssertionError):
                await poll(ready.exists, timeout=2, what="the shell")
        await session.type_text("echo 'client ✓' > ~/Downloads/c.txt")
        await session.key("Return")
        assert await poll(lambda: read_text(folder / "c.txt"), what="c.txt") == "client ✓\n"

        with pytest.raises(ValidationError) as invalid:
            await session.click(800, 10)
        assert invalid.value.status == 422
        assert invalid.value.errors[0].field == "coordinate"
        with pytest.raises(ValidationError):
            await session.act("teleport")

        control_token = session.tokens["control"]
        taken = await session.take_control(control_token)
        assert taken.controller == "human"
        with pytest.raises(HumanInControl) as refused:
            await session.click(10, 10)
        assert refused.value.slug == "human-in-control"
        waiter = asyncio.create_task(session.wait_for_control("agent", timeout=30))
        await asyncio.sleep(0)  # the waiter is not done before the release
        assert not waiter.done()
        await session.release_control(control_token)
        resumed = await waiter
        assert resumed.controller == "agent"
        assert resumed.screenshot_url == f"/api/visual-sessions/{session.session_id}/screenshot"
        # Already in control: returns at once.
        assert (await session.wait_for_control("agent", timeout=5)).controller == "agent"

        seen: list[Event] = []
        stopper: asyncio.Task[dict[str, object]] | None = None
        async for event in session.events():
            seen.append(event)
            if event.type == "control" and event.data["controller"] == "agent" \
                    and stopper is None:
                stopper = asyncio.create_task(session.stop())
        assert stopper is not None
        await stopper
        assert [e.id for e in seen] == list(range(1, len(seen) + 1))
        assert seen[-1].type == "status" and seen[-1].data["status"] == "stopped"
        assert {"status", "action", "control"} <= {e.type for e in seen}
        logs = await session.logs()
        assert [e["id"] for e in logs if e["type"] != "log"] == [e.id for e in seen]

        with pytest.raises(SessionNotRunning):
            await session.click(1, 1)
        await session.delete()
        with pytest.raises(NotFound):
            await client.get_session(session.session_id)

    async with VisualRuntimeClient(gw.base_url, "wrong-token") as bad:
        with pytest.raises(Unauthorized):
            await bad.list_sessions()


async def test_session_tokens_are_not_api_tokens(light_gateway: Gateway) -> None:
    gw = light_gateway
    async with VisualRuntimeClient(gw.base_url, API_TOKEN) as client:
        session = await client.create_session(resolution="640x480")
        assert session.tokens is not None
        async with VisualRuntimeClient(gw.base_url, session.tokens["control"]) as holder:
            # A control token may take control and watch, but not drive the agent API.
            mine = holder.session(session.session_id)
            assert (await mine.control()).controller == "agent"
            with pytest.raises(Forbidden):
                await mine.click(1, 1)
            with pytest.raises(Forbidden):
                await holder.list_sessions()
        async with VisualRuntimeClient(gw.base_url, session.tokens["view"]) as viewer:
            with pytest.raises(Forbidden):
                await viewer.session(session.session_id).take_control()
        await session.stop()


class Cutter:
    """A TCP proxy to the gateway that can cut every open connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for coro in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.create_task(coro)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def aclose(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_events_resume_after_a_broken_connection(light_gateway: Gateway) -> None:
    gw = light_gateway
    port = int(gw.base_url.rsplit(":", 1)[1])
    cutter = Cutter(port)
    proxy_port = await cutter.start()
    try:
        async with VisualRuntimeClient(f"http://127.0.0.1:{proxy_port}", API_TOKEN) as client:
            session = await client.create_session(resolution="640x480")
            seen: list[Event] = []
            async for event in session.events(retry_s=0.2):
                seen.append(event)
                if len(seen) == 2:  # starting, running
                    cutter.cut()
                    # Emitted while the stream is down: must still arrive, once.
                    await gw.stop(session.session_id)
            ids = [e.id for e in seen]
            assert ids == list(range(1, len(ids) + 1))
            assert [e.data.get("status") for e in seen if e.type == "status"] == [
                "starting", "running", "stopping", "stopped"]
    finally:
        await cutter.aclose()


def test_against_visual_runtime_serve(served_gateway: tuple[subprocess.Popen[bytes], str, Path]
                                      ) -> None:
    _, base_url, _ = served_gateway

    async def run() -> None:
        async with VisualRuntimeClient(base_url, API_TOKEN) as client:
            session = await client.create_session(resolution="800x600")
            assert session.status == "running"
            assert _png_size(await session.screenshot()) == (800, 600)
            assert await session.click(400, 300) == (400, 300)
            await session.stop()
            assert session.status == "stopped"
            await session.delete()

    asyncio.run(run())
