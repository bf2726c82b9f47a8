"""``python -m agent_side``: one session's runtime agent. All wiring lives here.

Start order: video source (opens the display) -> input injector -> control
gate -> WebRTC peers -> HTTP server on the unix socket. Stop in reverse on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from .cdp import CdpProxy
from .cdp_link import BrowserLink
from .config import AgentConfig
from .control import InputGate
from .fanout import BITRATE_POLICIES
from .ice import restrict_host_candidates
from .injector import create_injector
from .limits import ViewerAdmission, ViewerLimits
from .media import MediaConfig, VideoSource
from .peers import PeerManager
from .pooled import wait_for_claim, wait_for_display
from .recorder import Recorder, RecorderConfig
from .remote import add_arguments as add_link_arguments
from .remote import attach as attach_link
from .remote import listener_from, mirror_from, start_tcp_site
from .sctpguard import install as install_sctp_guard
from .server import STARTUP, create_app
from .vnc import VncBridge, VncServer
from .wsstream import StreamViewers

logger = logging.getLogger("agent_side")


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    parser = argparse.ArgumentParser(prog="python -m agent_side",
                                     description="Visual Runtime per-session runtime agent")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--display", required=True)
    parser.add_argument("--resolution", required=True, help="WxH")
    parser.add_argument("--session-id", default="")
    parser.add_argument("--fps", type=int, default=60,
                        help="frame-rate cap (1-120); the governor may go lower under load")
    parser.add_argument("--keyframe-interval", type=float, default=3.0)
    parser.add_argument("--bitrate-policy", choices=BITRATE_POLICIES, default="steering",
                        help="whose bandwidth estimates set the shared encoder's bitrate: "
                             "steering (tokens that may take control; view-only peers are "
                             "paced) or min (every viewer)")
    parser.add_argument("--input", choices=("xtest", "null"), default="xtest")
    parser.add_argument("--ice-ports", default=None, help="reserved: LOW-HIGH UDP port range")
    parser.add_argument("--recording", type=Path, default=None,
                        help="record the session into this folder (fragmented MP4)")
    parser.add_argument("--recording-keyframe-interval", type=float, default=2.0,
                        help="longest keyframe interval while recording (seconds)")
    parser.add_argument("--recording-min-free-mb", type=int, default=256,
                        help="stop recording below this much free disk space")
    defaults = ViewerLimits()
    for name in ("max_viewers", "max_viewers_per_token", "max_webrtc", "max_ws", "max_vnc",
                 "offers_per_minute", "session_offers_per_minute", "datachannel_max_bytes"):
        parser.add_argument("--" + name.replace("_", "-"), type=int,
                            default=getattr(defaults, name), help="viewer cap (agent_side.limits)")
    parser.add_argument("--cdp-socket", type=Path, default=None,
                        help="the DevTools relay's unix socket (serves GET /cdp)")
    parser.add_argument("--ice-deadline", type=float, default=defaults.ice_deadline_s,
                        help="seconds a WebRTC peer may take to connect before it is closed")
    parser.add_argument("--x11vnc-own-netns", action="store_true",
                        help="run x11vnc in a network namespace of its own (agent in the host's)")
    parser.add_argument("--pooled", action="store_true",
                        help="wait warm for a claim (warm pool); --resolution is the largest size")
    add_link_arguments(parser)
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.resolution.lower().split("x"))
    except ValueError:
        parser.error(f"--resolution must be WxH, not {args.resolution!r}")
    return AgentConfig(socket=args.socket, display=args.display, width=width, height=height,
                       session_id=args.session_id, fps=args.fps,
                       keyframe_interval_s=args.keyframe_interval, input=args.input,
                       bitrate_policy=args.bitrate_policy,
                       recording=args.recording,
                       recording_keyframe_interval_s=args.recording_keyframe_interval,
                       recording_min_free_mb=args.recording_min_free_mb,
                       limits=ViewerLimits(
                           max_viewers=args.max_viewers,
                           max_viewers_per_token=args.max_viewers_per_token,
                           max_webrtc=args.max_webrtc, max_ws=args.max_ws, max_vnc=args.max_vnc,
                           offers_per_minute=args.offers_per_minute,
                           session_offers_per_minute=args.session_offers_per_minute,
                           datachannel_max_bytes=args.datachannel_max_bytes,
                           ice_deadline_s=args.ice_deadline),
                       listen=listener_from(args, parser), mirror=mirror_from(args, parser),
                       cdp_socket=args.cdp_socket, pooled=args.pooled,
                       x11vnc_own_netns=args.x11vnc_own_netns)


async def _watch_worker(source: VideoSource, stop: asyncio.Event) -> None:
    """A crashed video worker ends the agent, so the session fails visibly."""
    while not stop.is_set():
        if source.failed is not None:
            logger.error("video worker failed (%r): exiting", source.failed)
            stop.set()
            return
        await asyncio.sleep(0.5)


async def serve(config: AgentConfig) -> int:
    """Run until SIGTERM/SIGINT (exit status 0) or a fatal capture error (1)."""
    sid = config.session_id
    # Start-up spans (ms) for the gateway's session log: the backend starts this agent
    # beside Xvfb, not after it, so the imports overlap the X server's start.
    spans: dict[str, float] = {"agent_imports": _process_age_ms()}
    spans["x_wait"] = await wait_for_display(config.display) * 1000
    if config.pooled:
        claim = await wait_for_claim(config.socket, config.display, config.width,
                                     config.height, config.cdp_socket, sid)
        config = dataclasses.replace(config, width=claim.width, height=claim.height,
                                     recording=config.recording if claim.recording else None,
                                     pooled=False)
        spans = {f"claim_{k}": v for k, v in claim.spans.items()}
    t0 = time.monotonic()
    keyframe_s = config.keyframe_interval_s
    if config.recording is not None:
        keyframe_s = min(keyframe_s, config.recording_keyframe_interval_s)
    source = VideoSource(MediaConfig(display=config.display, width=config.width,
                                     height=config.height, fps=config.fps,
                                     keyframe_interval_s=keyframe_s,
                                     bitrate_policy=config.bitrate_policy,
                                     session_id=sid))
    await source.start()
    spans["first_capture"] = (time.monotonic() - t0) * 1000
    recorder: Recorder | None = None
    if config.recording is not None:
        recorder = Recorder(source, RecorderConfig(
            folder=config.recording, width=config.width, height=config.height, session_id=sid,
            fps=config.fps, keyframe_interval_s=keyframe_s, min_free_mb=config.recording_min_free_mb))
        await recorder.start()
    injector = await asyncio.to_thread(
        create_injector, config.input, display=config.display,  # type: ignore[arg-type]
        width=config.width, height=config.height,
    )
    gate = InputGate(injector, sid)
    restrict_host_candidates(sid)  # before any peer gathers candidates
    install_sctp_guard(config.limits.datachannel_max_bytes)  # before any data channel opens
    peers = PeerManager(source, gate, injector, sid, ViewerAdmission(config.limits, sid))
    streams = StreamViewers(source, peers.inputs, sid)
    vnc = VncBridge(VncServer(config.display, config.socket.parent / "vnc.sock", sid,
                              own_netns=config.x11vnc_own_netns),
                    peers.inputs, sid)
    cdp = (CdpProxy(BrowserLink(config.cdp_socket, sid), gate, sid)
           if config.cdp_socket is not None else None)
    app = create_app(source, gate, peers, streams=streams, vnc=vnc, cdp=cdp)
    spans["serve"] = (time.monotonic() - t0) * 1000 - spans["first_capture"]
    app[STARTUP] = spans
    attach_link(app, config.listen, config.mirror)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    config.socket.unlink(missing_ok=True)
    site = web.UnixSite(runner, str(config.socket))
    await site.start()
    os.chmod(config.socket, 0o600)
    if config.listen is not None:
        await start_tcp_site(runner, config.listen)
    logger.info("session %s: runtime agent serving on %s (%dx%d)", sid, config.socket,
                config.width, config.height)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_watch_worker(source, stop))
    try:
        await stop.wait()
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
        logger.info("session %s: runtime agent stopping", sid)
        if cdp is not None:
            await cdp.aclose()
        await vnc.aclose()
        await streams.aclose()
        await peers.aclose()
        await runner.cleanup()
        if recorder is not None:
            await recorder.aclose()
        await gate.aclose()
        await source.aclose()
        config.socket.unlink(missing_ok=True)
    return 1 if source.failed is not None else 0


def _process_age_ms() -> float:
    """Milliseconds since this process started (its imports, mostly), from /proc."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s %(name)s [session {config.session_id}] %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
