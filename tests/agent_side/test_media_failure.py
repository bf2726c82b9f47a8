"""The video source when its display goes away: bounded retries, then a clear failure."""

from __future__ import annotations

import asyncio
import time

from agent_side.media import MediaConfig, VideoSource
from tests.conftest import start_xvfb, stop_xvfb


async def test_display_death_fails_the_source() -> None:
    display = start_xvfb(640, 480)
    source = VideoSource(MediaConfig(display=display.name, width=640, height=480))
    await source.start()
    try:
        assert await source.wait_first_frame(5)
        sub = source.subscribe("h264", name="t")
        assert (await asyncio.wait_for(sub.get(), 10)).is_keyframe
        assert source.failed is None
        stop_xvfb(display)
        source.request_keyframe()  # ask for frames from a display that is gone
        deadline = time.monotonic() + 15
        while source.failed is None:
            assert time.monotonic() < deadline, "the source never reported the dead display"
            source.request_keyframe()
            await asyncio.sleep(0.05)
        sub.close()
    finally:
        await source.aclose()
        if display.process.poll() is None:
            stop_xvfb(display)
