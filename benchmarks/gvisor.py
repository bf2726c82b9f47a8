"""Benchmark: the docker backend's app container on gVisor (``runsc``) against ``runc``.

One in-process gateway per runtime (``--backend docker --docker-runtime runc``
then ``runsc``, the same session image and settings: 1280x720, network
``none``, fluxbox + Chromium, no recording), one session at a time, both in
this run; every figure is runsc with runc as its baseline (ratio runsc/runc).

* **start**: ``POST /api/visual-sessions`` -> first decoded frame at an aiortc
  WHEP viewer (marker-bit receiver, ``benchmarks/receiver.py``) that offers as
  soon as ``?wait=running`` returns; also create -> running.
* **page load**: a local page (a 3,000-row table built by a script, inline
  CSS, a canvas) uploaded to the session's shared folder; its address
  (``file:///home/user/Downloads/...``) is typed into Chromium's address bar
  through the actions API, and the figure is the time from the Enter key's
  action to the decoded frame that shows the page's ``load`` handler's black
  overlay: a visual page load, so the input and the video path are in it on
  both runtimes (the CDP relay does not run under this gVisor release; see
  docs/docker.md), median over the loads (the first load is a warm-up).
* **CPU per active session**: a page animating a 1280x720 canvas every
  animation frame while the WHEP viewer watches; CPU of the app container and
  of the runtime-agent container from their cgroups (``cpuacct.usage``,
  cgroup v1, or ``cpu.stat`` on v2) over a window. Under gVisor the app
  container's cgroup holds the Sentry and its ptrace stubs: the cost of the
  user-space kernel is in that figure.
* **glass-to-glass**: the scroll scenario of ``glass_to_glass.py`` (an X
  client of the session's display draws numbered steps, the receiver matches
  decoded frames to them; ``benchmarks/marker_driver.py``);
* **action -> frame**: ``POST .../actions`` ``key`` into a page whose
  background grey steps on every keydown (Chromium inside the sandbox draws
  it); latency to the decoded frame that shows the new grey.

Usage: ``python benchmarks/gvisor.py [--quick]``; in the suite
``python -m benchmarks --only gvisor``. Needs ``runsc`` registered with dockerd
(``scripts/docker-setup.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.glass_to_glass import run_scenario  # noqa: E402
from benchmarks.harness import link_display, load_note, print_result, write_result  # noqa: E402
from benchmarks.marker_driver import Driver  # noqa: E402
from benchmarks.receiver import Receiver  # noqa: E402
from benchmarks.suite import Figure, Options, Result  # noqa: E402
from gateway.appkeys import CONFIG  # noqa: E402
from gateway.backends.docker import gateway_label  # noqa: E402
from tests.gateway_fixtures import in_process_gateway  # noqa: E402

RUNTIMES = ("runc", "runsc")
WIDTH, HEIGHT = 1280, 720
GREYS = (40, 90, 140, 190, 240)
PAGE_LOAD = """<!doctype html><html><head><style>
td{border:1px solid #ccc;padding:2px 6px;font:13px sans-serif}tr:nth-child(odd){background:#eef}
</style></head><body><canvas id=c width=600 height=300></canvas><table id=t></table><script>
const t=document.getElementById('t');let h='';
for(let i=0;i<3000;i++){h+='<tr><td>'+i+'</td><td>row '+(i*7919%10007)+'</td><td>'+
Math.sqrt(i).toFixed(3)+'</td></tr>'}t.innerHTML=h;
const g=document.getElementById('c').getContext('2d');
for(let i=0;i<400;i++){g.fillStyle='hsl('+i+',70%,50%)';g.fillRect(i*1.5,(i*37)%300,20,20)}
addEventListener('load',()=>{const d=document.createElement('div');
d.style.cssText='position:fixed;left:0;top:0;right:0;bottom:0;background:#000';
document.body.appendChild(d)});
</script></body></html>"""
PAGE_ANIMATE = """<!doctype html><html><body style="margin:0;overflow:hidden">
<canvas id=c width=1280 height=720></canvas><script>
const g=document.getElementById('c').getContext('2d');let n=0;
function f(){n++;for(let i=0;i<60;i++){g.fillStyle='hsl('+((n*3+i*6)%360)+',60%,50%)';
g.fillRect((i*97+n*5)%1280,(i*53+n*3)%720,80,60)}requestAnimationFrame(f)}f();
</script></body></html>"""
PAGE_KEYS = """<!doctype html><html><body style="margin:0;background:rgb(40,40,40)"><script>
const G=GREYS;let n=0;document.addEventListener('keydown',()=>{n++;const v=G[n%G.length];
document.body.style.background='rgb('+v+','+v+','+v+')'});</script></body></html>""".replace(
    "GREYS", str(list(GREYS)))


PAGE_WHITE = '<!doctype html><html><body style="background:#fff"></body></html>'
FILES = "file:///home/user/Downloads/"


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def _cgroup_cpu_s(container_id: str) -> float:
    """CPU seconds of a docker container's cgroup (v1 cpuacct or v2 cpu.stat)."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    for v2 in (Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"),
               Path(f"/sys/fs/cgroup/docker/{container_id}/cpu.stat")):
        if v2.exists():
            fields = dict(line.split() for line in v2.read_text().splitlines())
            return int(fields["usage_usec"]) / 1e6
    raise RuntimeError(f"no cgroup CPU figure for container {container_id[:12]}")


async def act(gw: Any, base: str, **action: Any) -> None:
    async with gw.http.post(base + "/actions", headers=gw.auth, json=action) as r:
        assert r.status == 200, await r.text()


def centre_luma(y: np.ndarray) -> float:
    h, w = y.shape
    return float(y[h // 2 - 50:h // 2 + 50, w // 2 - 100:w // 2 + 100].mean())


async def wait_luma(receiver: Receiver, test: Any, timeout: float = 30) -> float | None:
    """monotonic() of the first decoded frame whose centre luma passes *test*."""
    hit: dict[str, float] = {}
    done = asyncio.Event()

    def analyse(at: float, y: np.ndarray) -> None:
        if not done.is_set() and test(centre_luma(y)):
            hit["at"] = at
            done.set()

    receiver.analyse = analyse
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        return None
    finally:
        receiver.analyse = lambda at, y: None
    return hit["at"]


async def navigate(gw: Any, base: str, url: str) -> float:
    """Type *url* into Chromium's address bar through the API; monotonic() of the Enter."""
    await act(gw, base, action="key", text="ctrl+l")
    await act(gw, base, action="type", text=url)
    t0 = time.monotonic()
    await act(gw, base, action="key", text="Return")
    return t0


async def page_loads(gw: Any, base: str, receiver: Receiver, n: int) -> tuple[list[float], int]:
    """Enter -> the decoded frame that shows the loaded page (its onload paints it dark);
    and how many loads were not seen (no white page before, or no dark one after)."""
    out: list[float] = []
    missed = 0
    for i in range(n + 1):
        await navigate(gw, base, FILES + f"white.html?{i}")
        if await wait_luma(receiver, lambda v: v > 200) is None:
            missed += 1
            continue
        await asyncio.sleep(0.3)
        t0 = await navigate(gw, base, FILES + f"load.html?{i}")
        at = await wait_luma(receiver, lambda v: v < 40, timeout=60)
        if at is None:
            missed += 1
        elif i > 0:  # the first load warms the caches
            out.append((at - t0) * 1000)
    return out, missed


async def measure_runtime(runtime: str, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"runtime": runtime}
    tmp = Path(tempfile.mkdtemp(prefix=f"vr-bench-gvisor-{runtime}-"))
    async for gw in in_process_gateway(tmp, backend="docker", docker_runtime=runtime,
                                       apps=("fluxbox", "chromium"), start_timeout_s=120):
        receiver = Receiver()
        links: list[Path] = []
        driver: Driver | None = None
        sid = ""
        try:
            t0 = time.monotonic()
            created = await gw.create(resolution=f"{WIDTH}x{HEIGHT}", network="none",
                                      enable_recording=False)
            sid = created["session_id"]
            session = await gw.wait_status(sid, {"running", "failed", "stopped"}, timeout=120)
            assert session["status"] == "running", session
            out["running_s"] = time.monotonic() - t0
            await receiver.pc.setLocalDescription(await receiver.pc.createOffer())
            async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/whep"),
                                    data=receiver.pc.localDescription.sdp,
                                    headers={**gw.auth, "Content-Type": "application/sdp"}) as r:
                answer = await r.text()
                assert r.status == 201, answer
            from aiortc import RTCSessionDescription
            await receiver.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.wait_for(receiver.first_frame.wait(), 60)
            out["first_frame_s"] = time.monotonic() - t0

            base = gw.url(f"/api/visual-sessions/{sid}")
            for name, page in (("load.html", PAGE_LOAD), ("animate.html", PAGE_ANIMATE),
                               ("keys.html", PAGE_KEYS), ("white.html", PAGE_WHITE)):
                async with gw.http.put(f"{base}/files/{name}", data=page.encode(),
                                       headers=gw.auth) as r:
                    assert r.status in (200, 201), await r.text()
            await act(gw, base, action="left_click", coordinate=[WIDTH // 2, HEIGHT // 2])
            out["page_load_ms"], out["page_load_missed"] = await page_loads(
                gw, base, receiver, 4 if quick else 10)

            # CPU while a page animates and the viewer watches.
            await navigate(gw, base, FILES + "animate.html")
            await asyncio.sleep(3)
            prefix = f"vr-{gateway_label(gw.state_dir)[:8]}-{sid}"
            ids = {role: await _container_id(f"{prefix}-{role}") for role in ("app", "agent")}
            window = 6.0 if quick else 20.0
            c0 = {role: _cgroup_cpu_s(cid) for role, cid in ids.items()}
            f0, w0 = receiver.frames, time.monotonic()
            await asyncio.sleep(window)
            elapsed = time.monotonic() - w0
            c1 = {role: _cgroup_cpu_s(cid) for role, cid in ids.items()}
            out["cpu_pct"] = {role: (c1[role] - c0[role]) / elapsed * 100 for role in ids}
            out["active_fps"] = (receiver.frames - f0) / elapsed

            # action -> frame: a key through the API, Chromium repaints the page.
            await navigate(gw, base, FILES + "keys.html")
            await asyncio.sleep(2)
            out["action_ms"] = await action_to_frame(gw, base, receiver, 8 if quick else 30)

            # glass-to-glass: the scroll scenario, drawn by an X client of the display.
            x_socket = gw.extra["app"][CONFIG].runtime_dir / sid / "x11" / "X0"
            display, links = link_display(x_socket)
            driver = Driver(display, WIDTH, HEIGHT)
            await asyncio.to_thread(driver.open_window)
            scroll = await run_scenario("scrolling", driver, receiver, 15 if quick else 60,
                                        None, None)
            out["g2g_ms"] = scroll["latencies_ms"]
            await gw.stop(sid)
            await gw.wait_status(sid, {"stopped"}, timeout=60)
        finally:
            if driver is not None:
                with contextlib.suppress(Exception):
                    driver.close()
            for path in links:
                with contextlib.suppress(OSError):
                    path.unlink()
            await receiver.close()
    return out


async def _cdp_socket(gw: Any, sid: str, timeout: float = 60) -> aiohttp.ClientWebSocketResponse:
    """The session's CDP socket; 503 while Chromium is still starting, so retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await gw.http.ws_connect(gw.url(f"/api/visual-sessions/{sid}/cdp"),
                                            headers=gw.auth, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as e:
            if e.status != 503 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _container_id(name: str) -> str:
    import docker
    client = docker.from_env()
    try:
        return str(client.containers.get(name).id)
    finally:
        client.close()


async def action_to_frame(gw: Any, base: str, receiver: Receiver, samples: int) -> list[float]:
    """Latency from sending a ``key`` action to the decoded frame with the page's next grey."""
    async with gw.http.post(base + "/actions", headers=gw.auth,
                            json={"action": "left_click",
                                  "coordinate": [WIDTH // 2, HEIGHT // 2]}) as r:
        assert r.status == 200, await r.text()
    await asyncio.sleep(1)
    latencies: list[float] = []
    seen = asyncio.Event()
    want: dict[str, float] = {}

    def analyse(at: float, y: np.ndarray) -> None:
        if "grey" not in want or seen.is_set():
            return
        h, w = y.shape
        mean = float(y[h // 2 + 60:h // 2 + 160, w // 2 - 100:w // 2 + 100].mean())
        if abs(mean - (16 + 219 * want["grey"] / 255)) < 6:
            want["at"] = at
            seen.set()

    receiver.analyse = analyse
    presses = 0
    for _ in range(samples + 1):
        presses += 1
        want.clear()
        seen.clear()
        want["grey"] = GREYS[presses % len(GREYS)]
        t0 = time.monotonic()
        async with gw.http.post(base + "/actions", headers=gw.auth,
                                json={"action": "key", "text": "a"}) as r:
            assert r.status == 200, await r.text()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), 5)
        if seen.is_set() and presses > 1:  # the first press is a warm-up
            latencies.append((want["at"] - t0) * 1000)
        await asyncio.sleep(0.3)
    receiver.analyse = lambda at, y: None
    return latencies


async def measure(opts: Options) -> Result:
    notes = [load_note("at start")]
    results = {rt: await measure_runtime(rt, opts.quick) for rt in RUNTIMES}
    notes.append(load_note("at end"))
    return _result(results, opts.quick, notes)


def _result(results: dict[str, dict[str, Any]], quick: bool, notes: list[str]) -> Result:
    a, b = results["runsc"], results["runc"]
    base = "runc, same run"
    figures = [
        Figure("create -> running, runsc", a["running_s"], "s", b["running_s"], base),
        Figure("start: create -> first frame, runsc", a["first_frame_s"], "s",
               b["first_frame_s"], base),
        Figure(f"Chromium page load, Enter -> loaded page on screen, median "
               f"(n={len(a['page_load_ms'])}/{len(b['page_load_ms'])}), runsc",
               statistics.median(a["page_load_ms"]), "ms",
               statistics.median(b["page_load_ms"]), base),
        Figure("CPU per active session: app container, runsc", a["cpu_pct"]["app"],
               "% of a core", b["cpu_pct"]["app"], base),
        Figure("CPU per active session: runtime agent, runsc", a["cpu_pct"]["agent"],
               "% of a core", b["cpu_pct"]["agent"], base),
        Figure("CPU per active session: app + agent, runsc",
               a["cpu_pct"]["app"] + a["cpu_pct"]["agent"], "% of a core",
               b["cpu_pct"]["app"] + b["cpu_pct"]["agent"], base),
        Figure("frames received while animating, runsc", a["active_fps"], "fps",
               b["active_fps"], base, lower_is_better=False),
    ]
    for key, label in (("g2g_ms", "glass-to-glass (scroll)"), ("action_ms", "action -> frame (key)")):
        for q in (50, 95):
            figures.append(Figure(f"{label} p{q} (n={len(a[key])}/{len(b[key])}), runsc",
                                  pct(a[key], q), "ms", pct(b[key], q), base))
    notes.insert(0, "page loads not seen (of the loads incl. the warm-up): runsc "
                 f"{a['page_load_missed']}, runc {b['page_load_missed']}")
    notes = [f"{'quick' if quick else 'full'} mode; {WIDTH}x{HEIGHT}, network none, fluxbox + "
             "Chromium, no recording; runc first, then runsc, one session at a time", *notes]
    return Result(benchmark="gvisor", title="gVisor (runsc) vs runc: the docker backend's "
                  "app container", figures=figures, series=results, notes=notes)


def run(opts: Options) -> Result:
    return asyncio.run(measure(opts))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(Options(quick=args.quick))
    print_result(result)
    print(f"wrote {write_result(result, Options().out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
