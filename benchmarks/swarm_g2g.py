"""Glass-to-glass from a swarm worker, with realistic page content (benchmarks/swarm.py).

The page of :mod:`benchmarks.page_content` (it draws its own ``Date.now()`` as
16 black/white blocks every animation frame, beside a spinner, ``anim``) is
uploaded through the files API into the session's shared folder and opened in
the session's Chromium with actions; the viewer page in headless Chromium on
this machine (WebRTC) decodes the stamp from every picture it shows, with
page_content's detector. Glass to glass = the viewer's clock when a stamp is
shown - the stamp. The worker is a Docker-in-Docker container on this same
kernel, so the page and the viewer read one clock.

Where the stamp is comes from the session's lossless screenshot (the page draws
a #f0f calibration stripe first): no X connection to the worker is needed.

Each run is one fresh session; the swarm session (on a worker) and the docker
session (on the host, the same image and pod) alternate, so both see the same
machine load. Per backend, every shown stamp of every run is pooled for p50/p95.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import av
import numpy as np
from playwright.async_api import async_playwright

from benchmarks.harness import ServedGateway
from benchmarks.page_content import DETECTOR_JS, PAGE, pct, unwrap
from benchmarks.viewer_latency import CHROMIUM_ARGS

__all__ = ["g2g_runs"]

WIDTH, HEIGHT = 1600, 900
WORKLOAD = "anim"


async def _act(gw: ServedGateway, sid: str, body: dict[str, Any]) -> None:
    assert gw.http is not None
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/actions"), json=body) as r:
        assert r.status == 200, await r.text()


async def _open_page(gw: ServedGateway, sid: str, home: str) -> None:
    assert gw.http is not None
    async with gw.http.put(gw.url(f"/api/visual-sessions/{sid}/files/bench.html"),
                           data=PAGE.encode()) as r:
        assert r.status in (200, 201), await r.text()
    await asyncio.sleep(3.0)  # Chromium's first window
    await _act(gw, sid, {"action": "left_click", "coordinate": [WIDTH // 2, HEIGHT // 2]})
    await _act(gw, sid, {"action": "key", "text": "ctrl+l"})
    await _act(gw, sid, {"action": "type",
                         "text": f"file://{home}/Downloads/bench.html#{WORKLOAD}\n"})
    await asyncio.sleep(2.0)
    await _act(gw, sid, {"action": "left_click", "coordinate": [WIDTH // 2, HEIGHT - 60]})
    await _act(gw, sid, {"action": "mouse_move", "coordinate": [WIDTH - 5, HEIGHT - 5]})


async def _stripe(gw: ServedGateway, sid: str) -> tuple[int, int] | None:
    assert gw.http is not None
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/screenshot")) as r:
        png = await r.read()
    with av.open(io.BytesIO(png), "r") as container:
        px = next(container.decode(video=0)).to_ndarray(format="rgb24")
    mask = (px[:, :, 0] > 240) & (px[:, :, 1] < 15) & (px[:, :, 2] > 240)
    ys, xs = np.nonzero(mask)
    if ys.size < 256 * 8:
        return None
    return int(xs.min()), int(ys.min())


async def _locate(gw: ServedGateway, sid: str, home: str) -> tuple[int, int]:
    deadline = time.monotonic() + 30
    retyped = False
    while True:
        where = await _stripe(gw, sid)
        if where is not None:
            return where
        if time.monotonic() > deadline:
            raise RuntimeError("the page's calibration stripe never showed")
        if not retyped and time.monotonic() > deadline - 18:
            retyped = True
            await _open_page(gw, sid, home)
        await asyncio.sleep(1.0)


async def _one(gw: ServedGateway, home: str, seconds: float, pw: Any) -> dict[str, Any]:
    created = await gw.create_running(resolution=f"{WIDTH}x{HEIGHT}", network="none",
                                      enable_file_transfer=True, enable_recording=False)
    sid, token = created["session_id"], created["tokens"]["control"]
    browser = None
    try:
        await _open_page(gw, sid, home)
        mx, my = await _locate(gw, sid, home)
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                           args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": WIDTH, "height": HEIGHT + 80},
                                      bypass_csp=True)
        await page.goto(f"{gw.base}/sessions/{sid}/?token={token}&transport=webrtc")
        await page.wait_for_function(
            "window.vrViewer && vrViewer.state === 'connected' && "
            "vrViewer.transport.framesShown > 0", timeout=60000)
        await page.evaluate(DETECTOR_JS, [mx, my])
        await asyncio.sleep(1.0)
        await page.evaluate("window.__pc.seen = []; window.__pc.frames = 0")
        t0 = time.time() * 1000
        await _act(gw, sid, {"action": "key", "text": "s"})
        await asyncio.sleep(seconds)
        await _act(gw, sid, {"action": "key", "text": "s"})
        t1 = time.time() * 1000
        await asyncio.sleep(1.0)
        seen = await page.evaluate("window.__pc.seen")
        shown = [(c, t) for c, t in seen if t0 <= t <= t1 + 1000]
        g2g = [t - unwrap(c, t) for c, t in shown]
        return {"g2g_ms": g2g, "p50_ms": pct(g2g, 0.5),
                "delivered_fps": len(shown) / ((t1 - t0) / 1000)}
    finally:
        if browser is not None:
            await browser.close()
        await gw.delete(sid)


async def g2g_runs(swarm_gw: ServedGateway, docker_gw: ServedGateway, runs: int,
                   seconds: float) -> dict[str, Any]:
    """``{"swarm": {...}, "docker": {...}}``: pooled p50/p95 and each run's p50."""
    out: dict[str, dict[str, Any]] = {
        name: {"g2g_ms": [], "run_p50_ms": [], "delivered_fps": []}
        for name in ("swarm", "docker")}
    async with async_playwright() as pw:
        for _ in range(runs):
            for name, gw, home in (("docker", docker_gw, "/home/user"),
                                   ("swarm", swarm_gw, "/tmp/user")):
                r = await _one(gw, home, seconds, pw)
                out[name]["g2g_ms"] += r["g2g_ms"]
                out[name]["run_p50_ms"].append(r["p50_ms"])
                out[name]["delivered_fps"].append(r["delivered_fps"])
    for figures in out.values():
        figures["p50_ms"] = pct(figures["g2g_ms"], 0.5)
        figures["p95_ms"] = pct(figures["g2g_ms"], 0.95)
        figures["samples"] = len(figures.pop("g2g_ms"))
    return out
