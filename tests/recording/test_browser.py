"""Chromium (real, headless, via Playwright) plays and seeks a finalised recording."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.conftest import CHROMIUM_ARGS, require_binary
from tests.gateway_fixtures import Gateway, in_process_gateway
from tests.recording.helpers import type_for, wait_event

PLAY_AND_SEEK = """async () => {
  const v = document.getElementById('v');
  const once = (name) => new Promise((resolve, reject) => {
    v.addEventListener(name, resolve, {once: true});
    v.addEventListener('error', () => reject(new Error('media error ' + (v.error && v.error.code))),
                       {once: true});
  });
  if (v.readyState < 1) await once('loadedmetadata');
  const duration = v.duration;
  await v.play();
  while (v.currentTime <= 0.1) await once('timeupdate');
  v.pause();
  const target = duration / 2;
  const seeked = once('seeked');
  v.currentTime = target;
  await seeked;
  return {duration, target, current: v.currentTime, width: v.videoWidth, height: v.videoHeight};
}"""


@pytest.fixture
async def rec_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in in_process_gateway(tmp_path, apps=("xterm",)):
        yield gw


@pytest.mark.timeout(120)
async def test_chromium_plays_and_seeks_finalised_recording(rec_gateway: Gateway) -> None:
    gw = rec_gateway
    chromium = require_binary("chromium")
    session = await gw.create_running(resolution="800x600")
    sid = session["session_id"]
    await type_for(gw, sid, 4.0)
    await gw.stop(sid)
    final = await wait_event(gw, sid, "recording", status="finalised")
    url = gw.url(f"/api/visual-sessions/{sid}/recording")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(extra_http_headers=gw.auth)
            page = await context.new_page()
            # Same origin as the recording: load a page of the gateway first.
            await page.goto(gw.url("/healthz"))
            await page.set_content(f'<video id="v" muted preload="auto" src="{url}"></video>')
            result = await page.evaluate(PLAY_AND_SEEK)
        finally:
            await browser.close()
    assert (result["width"], result["height"]) == (800, 600)
    assert result["duration"] == pytest.approx(final["duration_s"], abs=0.1)
    assert result["current"] == pytest.approx(result["target"], abs=0.05)
