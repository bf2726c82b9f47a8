"""Benchmark: the cost of 1, 5 and 10 viewers of one session, against x11vnc with 1, 5, 10 clients.

One light session (Xvfb + xterm, 1600x900, ``local`` backend, recording off)
behind a served gateway (its own process, so its CPU is its own). A steady
workload runs on the session's display for the whole benchmark: the
``scroll`` stimulus of ``viewer_latency.py`` (:class:`Stimulus`: a page of
anti-aliased text moving up one line per step) at 30 steps/s, from a thread
of this process.

* **ours** — aiortc viewers through ``POST .../whep``, added 1 -> 5 -> 10. One
  viewer decodes (to show the stream is real: frames/s); the others count RTP
  payload bytes and drop the packets before the decoder, so that ten H.264
  decoders in this process do not starve the 2-core machine the server side
  runs on (a real viewer decodes on its own machine). Per step: runtime agent
  CPU, gateway CPU, app sandbox CPU (Xvfb, xterm), bytes/s received in total.
* **baseline** — the WebRTC viewers gone, x11vnc ``-defer 5 -wait 5
  -nowait_bog`` on the same display (``-noshm``, XGetImage) with 1 -> 5 -> 10
  RFB clients requesting updates continuously (ZRLE): x11vnc CPU, app CPU and
  bytes/s in total.

CPU is ``utime + stime`` from ``/proc``. ``Result.series["cpu_vs_viewers"]``
holds streamer CPU per viewer count for the plot.

Standalone: ``python -m benchmarks.fanout [--quick]`` prints a table and writes
``benchmarks/results/fanout.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    ServedGateway,
    census,
    cpu_map,
    cpu_pct,
    link_display,
    load_note,
    pod_pids,
    print_result,
    wait_for,
    write_result,
)
from benchmarks.receiver import MarkerJitterBuffer, Receiver  # noqa: E402
from benchmarks.stimulus import STEP_HZ, Stimulus  # noqa: E402
from benchmarks.suite import Figure, Options, Result  # noqa: E402
from benchmarks.vncclient import RfbClient, X11vnc  # noqa: E402

COUNTS = (1, 5, 10)
RESOLUTION = "1600x900"
OURS = "Visual Runtime (runtime agent)"
BASELINE = "x11vnc (tuned)"


class CountingBuffer(MarkerJitterBuffer):
    """Counts RTP payload bytes; hands frames to the decoder only when *decode*."""

    def __init__(self, decode: bool) -> None:
        super().__init__(capacity=512, is_video=True)
        self.decode = decode
        self.bytes = 0
        self.packets = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        self.bytes += len(packet.payload)
        self.packets += 1
        if not self.decode:
            return False, None
        return super().add(packet)


class Viewer:
    """An aiortc WHEP viewer of the session, decoding or counting only."""

    def __init__(self, decode: bool) -> None:
        self.receiver = Receiver()
        self.buffer = CountingBuffer(decode)
        self.receiver.transceiver.receiver._RTCRtpReceiver__jitter_buffer = (  # type: ignore[attr-defined]
            self.buffer)
        self.location = ""

    async def aclose(self, gw: ServedGateway) -> None:
        if self.location:
            await gw.delete_path(self.location)
        await self.receiver.close()


class Workload:
    """The scroll stimulus at STEP_HZ on a thread until stopped."""

    def __init__(self, stim: Stimulus) -> None:
        self.stim = stim
        self.stop = threading.Event()
        self.steps = 0
        self.thread = threading.Thread(target=self._run, name="fanout-scroll", daemon=True)

    def _run(self) -> None:
        period = 1 / STEP_HZ
        next_at = time.monotonic()
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.stim.draw("scroll")
            self.steps += 1
            next_at = max(next_at + period, time.monotonic() - period)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


async def _window(groups: dict[str, list[int]], seconds: float,
                  counter: Any) -> tuple[dict[str, float], float]:
    before = {name: cpu_map(pids) for name, pids in groups.items()}
    bytes0 = counter()
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = {name: cpu_pct(before[name], cpu_map(pids), elapsed) for name, pids in groups.items()}
    return cpu, (counter() - bytes0) / elapsed


async def _stimulus(x_socket: Path) -> Stimulus:
    """A Stimulus on *x_socket*; retried because its display link (``/tmp/.X11-unix/X90``
    and up) can race with another benchmark run creating the same link."""
    for attempt in range(10):
        try:
            return await asyncio.to_thread(Stimulus, x_socket)
        except FileExistsError:
            if attempt == 9:
                raise
            await asyncio.sleep(0.3)
    raise AssertionError("unreachable")


async def _warm_up(client: RfbClient, seconds: float) -> None:
    """At least *seconds*, and until the client got 3 updates within one second (<= 15 s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 15:
        updates = client.updates
        await asyncio.sleep(1.0)
        if client.updates - updates >= 3 and time.monotonic() - t0 >= seconds:
            return


async def measure(opts: Options) -> Result:
    window, settle = (1.5, 0.5) if opts.quick else (10.0, 2.0)
    notes = [load_note("at start")]
    before = census()
    gw = ServedGateway(apps=("xterm",), name="fanout")
    viewers: list[Viewer] = []
    clients: list[RfbClient] = []
    vnc: X11vnc | None = None
    stim: Stimulus | None = None
    workload: Workload | None = None
    links: list[Path] = []
    ours: dict[int, dict[str, Any]] = {}
    base: dict[int, dict[str, Any]] = {}
    sid = ""
    try:
        await gw.start()
        created = await gw.create_running(resolution=RESOLUTION, enable_recording=False)
        sid = created["session_id"]
        stim = await _stimulus(gw.x_socket(sid))
        workload = Workload(stim)
        workload.start()
        pods = pod_pids([sid])[sid]
        for count in COUNTS:
            while len(viewers) < count:
                viewer = Viewer(decode=not viewers)
                viewers.append(viewer)
                viewer.location = await gw.whep(sid, viewer.receiver.pc,
                                                token=await gw.view_token(sid))
            await wait_for(lambda: all(v.buffer.packets > 0 for v in viewers), 30,
                           f"{count} viewers receiving")
            await asyncio.sleep(settle)
            frames0, steps0 = viewers[0].receiver.frames, workload.steps
            stats0 = (await gw.agent_stats(sid))["media"]
            t0 = time.monotonic()
            cpu, rate = await _window(
                {"agent": pods["agent"], "gateway": [gw.pid], "app": pods["app"],
                 "viewers_process": [os.getpid()]}, window,
                lambda: sum(v.buffer.bytes for v in viewers))
            elapsed = time.monotonic() - t0
            stats1 = (await gw.agent_stats(sid))["media"]
            ours[count] = {"cpu": cpu, "bytes_per_s": rate,
                           "encoded_fps": (stats1["frames_encoded"]["total"]
                                           - stats0["frames_encoded"]["total"]) / elapsed,
                           "encoded_bytes_per_s": (stats1["bytes_encoded"]["total"]
                                                   - stats0["bytes_encoded"]["total"]) / elapsed,
                           "packets_per_viewer": [v.buffer.packets for v in viewers],
                           "decoded_fps": (viewers[0].receiver.frames - frames0) / elapsed,
                           "steps_per_s": (workload.steps - steps0) / elapsed}
        for viewer in viewers:
            await viewer.aclose(gw)
        viewers.clear()

        display, links = link_display(gw.x_socket(sid))
        vnc = X11vnc(display, tuned=True, noshm=True)
        await vnc.start()
        for count in COUNTS:
            while len(clients) < count:
                client = RfbClient()
                await client.connect(vnc.socket_path)
                clients.append(client)
            await wait_for(lambda: all(c.updates > 0 for c in clients), 30,
                           f"{count} VNC clients updating")
            if count == COUNTS[0]:
                # x11vnc needs a few seconds before it keeps up with a changing screen
                await _warm_up(clients[0], 2.0 if opts.quick else 5.0)
            await asyncio.sleep(settle)
            updates0, steps0 = clients[0].updates, workload.steps
            t0 = time.monotonic()
            cpu, rate = await _window({"x11vnc": [vnc.pid], "gateway": [gw.pid],
                                       "agent": pods["agent"], "app": pods["app"]}, window,
                                      lambda: sum(c.bytes for c in clients))
            elapsed = time.monotonic() - t0
            base[count] = {"cpu": cpu, "bytes_per_s": rate,
                           "updates_per_s": (clients[0].updates - updates0) / elapsed,
                           "steps_per_s": (workload.steps - steps0) / elapsed}
    finally:
        if workload is not None:
            await asyncio.to_thread(workload.close)
        for client in clients:
            await client.aclose()
        if vnc is not None:
            await vnc.aclose()
        for viewer in viewers:
            await viewer.aclose(gw)
        if stim is not None:
            stim.close()
        for path in links:
            with contextlib.suppress(OSError):
                path.unlink()
        if sid:
            await gw.delete(sid)
        await gw.aclose()
    after = census(gw.session_ids)
    notes.append(f"processes before/after: ours {before['ours']}/{after['ours']}, "
                 f"machine {before['machine']}/{after['machine']}")
    if after["ours"] > before["ours"]:
        notes.append("WARNING: processes of this benchmark were left running")
    notes.append(load_note("at end"))
    return _result(ours, base, window, notes)


def _result(ours: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]], window: float,
            notes: list[str]) -> Result:
    figures: list[Figure] = []
    for n in COUNTS:
        o, b = ours[n], base[n]
        figures += [
            Figure(f"fan-out streamer CPU, scroll, {n} viewer{'s' if n > 1 else ''}",
                   o["cpu"]["agent"], "% of a core", b["cpu"]["x11vnc"],
                   f"{BASELINE}, {n} VNC client{'s' if n > 1 else ''}"),
            Figure(f"fan-out server CPU (streamer + gateway + Xvfb/apps), scroll, {n} viewers",
                   o["cpu"]["agent"] + o["cpu"]["gateway"] + o["cpu"]["app"], "% of a core",
                   b["cpu"]["x11vnc"] + b["cpu"]["app"], f"{BASELINE} + Xvfb/apps"),
            Figure(f"fan-out bytes/s sent in total, scroll, {n} viewers",
                   o["bytes_per_s"] / 1000, "kB/s", b["bytes_per_s"] / 1000, BASELINE),
        ]
    one, ten = ours[1]["cpu"]["agent"], ours[10]["cpu"]["agent"]
    b1, b10 = base[1]["cpu"]["x11vnc"], base[10]["cpu"]["x11vnc"]
    figures.append(Figure("fan-out streamer CPU per extra viewer (1 -> 10)", (ten - one) / 9,
                          "% of a core", (b10 - b1) / 9, f"{BASELINE} per extra client"))
    figures.append(Figure("frames/s shown by one viewer, scroll, 10 viewers",
                          ours[10]["decoded_fps"], "fps", base[10]["updates_per_s"],
                          f"{BASELINE} updates/s to one of 10 clients", lower_is_better=False))
    figures.append(Figure("gateway CPU with 10 viewers", ours[10]["cpu"]["gateway"], "% of a core"))
    series = {
        "cpu_vs_viewers": {OURS: [[n, ours[n]["cpu"]["agent"]] for n in COUNTS],
                           BASELINE: [[n, base[n]["cpu"]["x11vnc"]] for n in COUNTS]},
        "bytes_per_s_vs_viewers": {OURS: [[n, ours[n]["bytes_per_s"]] for n in COUNTS],
                                   BASELINE: [[n, base[n]["bytes_per_s"]] for n in COUNTS]},
        "ours": {str(n): v for n, v in ours.items()},
        "baseline": {str(n): v for n, v in base.items()},
    }
    notes = [f"{window:.1f} s window per viewer count; workload: viewer_latency Stimulus 'scroll' at "
             f"{STEP_HZ} steps/s on a {RESOLUTION} light session (Xvfb + xterm), recording off",
             "ours: aiortc WHEP viewers through the gateway; one decodes, the others count RTP "
             "payload bytes and drop packets before the decoder (viewers' decode is not server "
             "cost); baseline: x11vnc -defer 5 -wait 5 -nowait_bog -noshm on the same display, "
             "RFB clients asking for ZRLE updates continuously (noVNC's loop)",
             *notes]
    return Result(benchmark="fanout", title="Fan-out: cost of 1, 5, 10 viewers vs x11vnc with "
                  "1, 5, 10 clients (same display, same workload, same run)",
                  figures=figures, series=series, notes=notes)


def run(opts: Options) -> Result:
    return asyncio.run(measure(opts))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=Options().out_dir)
    args = parser.parse_args()
    t0 = time.monotonic()
    result = run(Options(quick=args.quick, out_dir=args.out_dir))
    result.seconds = time.monotonic() - t0
    print_result(result)
    for n in COUNTS:
        o, b = result.series["ours"][str(n)], result.series["baseline"][str(n)]
        print(f"  {n:2d} viewers: encoded {o['encoded_fps']:.1f} fps, decoded "
              f"{o['decoded_fps']:.1f} fps, workload "
              f"{o['steps_per_s']:.1f} steps/s | x11vnc client 1: {b['updates_per_s']:.1f} "
              f"updates/s, workload {b['steps_per_s']:.1f} steps/s")
    print(f"\nwrote {write_result(result, args.out_dir)} ({result.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
