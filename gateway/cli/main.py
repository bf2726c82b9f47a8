"""``visual-runtime``: serve the gateway, run the demo, talk to a running gateway."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.cli.argv_secrets import reexec_without_token
from gateway.cli.commands import URL_FILE, add_client_commands
from gateway.cli.demo_agent import drive
from gateway.cli.mcp_command import add_mcp_command
from gateway.config import EGRESS_DENY_DEFAULT, GatewayConfig, env_default
from gateway.errors import BackendError, StateFileError
from gateway.security.conncap import CONNECTIONS, CappedAppRunner, raise_nofile_limit
from gateway.sessions.tokens import load_or_create_api_token
from wire.agent_api import BITRATE_POLICIES

logger = logging.getLogger("gateway")


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=env_default("host", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env_default("port", "3000") or 3000))
    p.add_argument("--backend", choices=("local", "docker", "swarm"),
                   default=env_default("backend", "local"))
    p.add_argument("--state-dir", type=Path,
                   default=Path(env_default("state_dir", "state") or "state"))
    p.add_argument("--token", default=env_default("token", None), help="API token")
    p.add_argument("--max-sessions", type=int,
                   default=int(env_default("max_sessions", "8") or 8))
    p.add_argument("--pool-size", type=int,
                   default=int(env_default("pool_size", "0") or 0),
                   help="warm pods kept ready for the default pool key (0: no warm pool)")
    p.add_argument("--pool", action="append", metavar="KEY=N",
                   default=[i for i in (env_default("pool", "") or "").split(",") if i],
                   help="warm pods for one pool key (WxH; docker: WxH/none|egress); repeatable")
    p.add_argument("--pool-max-load", type=float,
                   default=float(env_default("pool_max_load", "3.0") or 3.0),
                   help="no warm-pool refill while the load average per core is above this")
    p.add_argument("--tls-cert", type=Path, default=env_default("tls_cert", None))
    p.add_argument("--tls-key", type=Path, default=env_default("tls_key", None))
    p.add_argument("--apps", default=env_default("apps", "fluxbox,xterm,chromium"),
                   help="programs in each session (comma-separated subset)")
    p.add_argument("--log-level", default=env_default("log_level", "INFO"))
    p.add_argument("--recording-max-age-hours", type=float,
                   default=float(env_default("recording_max_age_hours", "168") or 168),
                   help="delete recordings of sessions ended longer ago (0: keep)")
    p.add_argument("--recording-quota-mb", type=int,
                   default=int(env_default("recording_quota_mb", "10240") or 10240),
                   help="total size of all recordings; oldest ended go first (0: none)")
    p.add_argument("--recording-min-free-mb", type=int,
                   default=int(env_default("recording_min_free_mb", "256") or 256),
                   help="a session stops recording below this much free disk")
    p.add_argument("--agent-restarts", type=int,
                   default=int(env_default("agent_restarts", "0") or 0),
                   help="restart a session's crashed runtime agent up to N times (0: fail)")
    p.add_argument("--session-disk-mb", type=int,
                   default=int(env_default("session_disk_mb", "2048") or 2048),
                   help="size of each session's own filesystem (HOME, shared folder; "
                        "local and docker; 0: none, unlimited on the state disk)")
    p.add_argument("--max-upload-mb", type=int,
                   default=int(env_default("max_upload_mb", "512") or 512))
    p.add_argument("--upload-scan-command", default=env_default("upload_scan_command", None),
                   help="run on each upload, e.g. 'clamscan --no-summary {path}'")
    p.add_argument("--runtime-dir", type=Path,
                   default=Path(env_default("runtime_dir", "/run/visual-runtime") or "/run/visual-runtime"),
                   help="sockets of live pods (keep the path short)")
    p.add_argument("--docker-image", default=env_default("docker_image", "visual-runtime-session:latest"),
                   help="session image of the docker backend")
    p.add_argument("--docker-seccomp-profile", type=Path,
                   default=env_default("docker_seccomp_profile", None),
                   help="seccomp JSON of docker app containers (default: container/seccomp-chromium.json)")
    p.add_argument("--docker-runtime", default=env_default("docker_runtime", "runc") or "runc",
                   help="OCI runtime of docker app containers: runc, or runsc (gVisor; "
                        "registered with dockerd, docs/docker.md)")
    p.add_argument("--swarm-constraint", action="append", metavar="EXPR",
                   default=[c for c in (env_default("swarm_constraint", "") or "").split(",") if c],
                   help="placement constraint of swarm sessions, repeatable "
                        "(default: node.labels.visual-runtime==session)")
    p.add_argument("--swarm-link-port", type=int,
                   default=int(env_default("swarm_link_port", "17100") or 17100),
                   help="first TCP port of the runtime agents' link on swarm nodes (+ slot)")
    p.add_argument("--swarm-reserve-cpus", type=float,
                   default=float(env_default("swarm_reserve_cpus", "0.5") or 0.5),
                   help="CPU cores swarm reserves per session")
    p.add_argument("--swarm-reserve-memory-mb", type=int,
                   default=int(env_default("swarm_reserve_memory_mb", "1024") or 1024),
                   help="memory swarm reserves per session")
    p.add_argument("--auth-failure-limit", type=int,
                   default=int(env_default("auth_failure_limit", "20") or 20),
                   help="failed token attempts per client address per window before 429")
    p.add_argument("--auth-failure-window", type=float,
                   default=float(env_default("auth_failure_window", "60") or 60),
                   help="seconds over which failed token attempts are counted")
    p.add_argument("--create-rate", type=float,
                   default=float(env_default("create_rate", "30") or 30),
                   help="sessions one client may create per minute on average (429 beyond)")
    p.add_argument("--create-burst", type=int,
                   default=int(env_default("create_burst", "20") or 20),
                   help="sessions one client may create back to back")
    p.add_argument("--allowed-origins", default=env_default("allowed_origins", ""),
                   help="comma-separated browser origins (besides the gateway's own) allowed "
                        "on the WebSocket and WHEP endpoints")
    p.add_argument("--keepalive-timeout", type=float,
                   default=float(env_default("keepalive_timeout", "75") or 75),
                   help="seconds an idle HTTP keep-alive connection stays open")
    p.add_argument("--max-connections", type=int,
                   default=int(env_default("max_connections", "0") or 0),
                   help="open connections from all clients before 503 (0: half the file "
                        "limit left after 1024, 64-16384)")
    p.add_argument("--max-connections-per-client", type=int,
                   default=int(env_default("max_connections_per_client", "0") or 0),
                   help="open connections from one client address before 503 (0: a quarter "
                        "of --max-connections, 16-256)")
    p.add_argument("--event-log-max-mb", type=int,
                   default=int(env_default("event_log_max_mb", "64") or 64),
                   help="size a session's event log stays under (oldest events dropped, with "
                        "an events_dropped event)")
    p.add_argument("--session-log-max-mb", type=int,
                   default=int(env_default("session_log_max_mb", "64") or 64),
                   help="size past which a session's agent.log/app.log is cut (newest half "
                        "kept in *.1.log, a marker line)")
    p.add_argument("--egress-deny", default=env_default("egress_deny", None),
                   help="comma-separated IPv4 networks egress sessions never reach (default: "
                        "private, CGNAT and cloud metadata ranges; 'none' for none)")
    p.add_argument("--max-fps", type=int, default=int(env_default("max_fps", "60") or 60),
                   help="frame-rate cap of every session's video, 1-120 (the runtime agent "
                        "lowers it when it cannot keep up)")
    p.add_argument("--bitrate-policy", choices=BITRATE_POLICIES,
                   default=env_default("bitrate_policy", "steering") or "steering",
                   help="whose bandwidth estimates set a session's shared encoder bitrate: "
                        "steering (tokens that may take control; view-only viewers are "
                        "paced on their own, the default) or min (every viewer)")
    p.add_argument("--viewer-limit", action="append", metavar="NAME=N",
                   default=[v for v in (env_default("viewer_limit", "") or "").split(",") if v],
                   help="a viewer cap of every session, repeatable: max_viewers, "
                        "max_viewers_per_token, max_webrtc, max_ws, max_vnc, offers_per_minute, "
                        "session_offers_per_minute, datachannel_max_bytes, ice_deadline_s "
                        "(docs/SECURITY.md)")
    p.add_argument("--allowed-hosts", default=env_default("allowed_hosts", ""),
                   help="comma-separated Host names/addresses served besides localhost and "
                        "the --host address (others: 421); '*' for any")
    p.add_argument("--frame-ancestors", default=env_default("frame_ancestors", "'none'"),
                   help="CSP frame-ancestors of the viewer pages, e.g. \"'self' https://app.example\"")
    p.add_argument("--ice-server", action="append", metavar="URL",
                   default=[v for v in (env_default("ice_server", "") or "").split(",") if v],
                   help="a STUN/TURN server offered to viewers (WHEP Link headers, the viewer "
                        "page), repeatable: stun:HOST:PORT or "
                        "turn:HOST:PORT?transport=udp;username=U;credential=C")
    p.add_argument("--turn-url", action="append", metavar="URL",
                   default=[v for v in (env_default("turn_url", "") or "").split(",") if v],
                   help="a TURN server (coturn, use-auth-secret) offered to viewers with "
                        "credentials minted per viewer, repeatable: turn:HOST:3478?transport=udp")
    p.add_argument("--turn-secret-file", type=Path, default=env_default("turn_secret_file", None),
                   help="file with coturn's static-auth-secret (needed with --turn-url)")
    p.add_argument("--turn-ttl", type=float,
                   default=float(env_default("turn_ttl", "3600") or 3600),
                   help="seconds a minted TURN credential stays valid")
    p.add_argument("--max-body-kb", type=int,
                   default=int(env_default("max_body_kb", "64") or 64),
                   help="largest JSON or SDP request body in KiB (uploads: --max-upload-mb)")


def _config(args: argparse.Namespace) -> GatewayConfig:
    try:
        return _build_config(args)
    except ValueError as e:  # a bad setting is a clear start-up error, not a traceback
        raise SystemExit(f"visual-runtime: invalid configuration: {e}") from None


def _pool_sizes(items: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for item in items:
        key, _, n = item.partition("=")
        if not n.strip().isdigit():
            raise ValueError(f"--pool {item!r}: expected KEY=N (e.g. 1280x720=2)")
        out.append((key.strip(), int(n)))
    return tuple(out)


def _build_config(args: argparse.Namespace) -> GatewayConfig:
    apps = tuple(a for a in str(args.apps).split(",") if a)
    return GatewayConfig(
        host=args.host, port=args.port, backend=args.backend,
        state_dir=Path(args.state_dir).resolve(), token=args.token,
        max_sessions=args.max_sessions,
        pool_size=args.pool_size, pool=_pool_sizes(args.pool), pool_max_load=args.pool_max_load,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None, apps=apps,
        recording_max_age_hours=args.recording_max_age_hours,
        recording_quota_mb=args.recording_quota_mb,
        recording_min_free_mb=args.recording_min_free_mb, agent_restarts=args.agent_restarts,
        session_disk_mb=args.session_disk_mb,
        max_upload_mb=args.max_upload_mb, upload_scan_command=args.upload_scan_command or None,
        runtime_dir=Path(args.runtime_dir).resolve(), docker_image=args.docker_image,
        swarm_constraints=(tuple(args.swarm_constraint) or GatewayConfig.swarm_constraints),
        swarm_link_port=args.swarm_link_port, swarm_reserve_cpus=args.swarm_reserve_cpus,
        swarm_reserve_memory_mb=args.swarm_reserve_memory_mb,
        docker_seccomp_profile=(Path(args.docker_seccomp_profile)
                                if args.docker_seccomp_profile else None),
        docker_runtime=args.docker_runtime,
        auth_failure_limit=args.auth_failure_limit,
        auth_failure_window_s=args.auth_failure_window,
        create_rate_per_minute=args.create_rate, create_burst=args.create_burst,
        allowed_origins=tuple(o.strip() for o in str(args.allowed_origins).split(",") if o.strip()),
        egress_deny=_egress_deny(args.egress_deny),
        keepalive_timeout_s=args.keepalive_timeout,
        max_connections=args.max_connections,
        max_connections_per_client=args.max_connections_per_client,
        event_log_max_mb=args.event_log_max_mb, session_log_max_mb=args.session_log_max_mb,
        frame_ancestors=args.frame_ancestors, max_body_kb=args.max_body_kb,
        max_fps=args.max_fps, viewer_limits=_viewer_limits(args.viewer_limit),
        bitrate_policy=args.bitrate_policy,
        allowed_hosts=tuple(h.strip() for h in str(args.allowed_hosts).split(",") if h.strip()),
        ice_servers=tuple(s.strip() for s in args.ice_server if s.strip()),
        turn_urls=tuple(s.strip() for s in args.turn_url if s.strip()),
        turn_secret_file=Path(args.turn_secret_file) if args.turn_secret_file else None,
        turn_ttl_s=args.turn_ttl,
    )


def _egress_deny(raw: str | None) -> tuple[str, ...]:
    """``egress_deny`` for the config: the default when not given, none for 'none'."""
    if raw is None:
        return EGRESS_DENY_DEFAULT
    if raw.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(str(ipaddress.IPv4Network(n.strip())) for n in raw.split(",") if n.strip())
    except ValueError as e:
        raise SystemExit(f"--egress-deny: {e}") from None


def _viewer_limits(items: list[str]) -> tuple[tuple[str, float], ...]:
    """``["max_ws=4", ...]`` -> ``(("max_ws", 4.0), ...)``; bad ones are a usage error."""
    out = []
    for item in items:
        name, _, value = item.partition("=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            raise SystemExit(f"--viewer-limit {item!r}: expected NAME=NUMBER") from None
    return tuple(out)


async def run_gateway(config: GatewayConfig,
                      after_start: Callable[[str, str], Awaitable[None]] | None = None,
                      before_stop: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; then stop every session and exit.

    *before_stop* runs first on the way out (while the sessions still run).
    """
    if config.token:
        api_token, created = config.token, False
    else:
        api_token, created = load_or_create_api_token(config.token_file)
    nofile = raise_nofile_limit()
    app = create_app(config, api_token)
    caps = app[CONNECTIONS]
    logger.info("file limit %d: at most %d open connections, %d per client address",
                nofile, caps.max_connections, caps.max_per_client)
    runner = CappedAppRunner(app, caps, handle_signals=False,
                             keepalive_timeout=config.keepalive_timeout_s)
    await runner.setup()
    ssl_ctx = None
    if config.tls_cert and config.tls_key:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(config.tls_cert, config.tls_key)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_ctx)
    await site.start()
    scheme = "https" if ssl_ctx else "http"
    port = config.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    base = f"{scheme}://{config.host}:{port}"
    print(f"Visual Runtime gateway listening on {base} (backend {config.backend})", flush=True)
    url_file = config.state_dir / URL_FILE
    try:
        url_file.write_text(base + "\n")
    except OSError as e:
        logger.warning("cannot write %s: %s", url_file, e)
    if created:
        print(f"API token (stored in {config.token_file}, mode 0600): {api_token}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if after_start is not None:
            await after_start(base, api_token)
        await stop.wait()
    finally:
        print("shutting down: stopping every session", flush=True)
        if before_stop is not None:
            await before_stop()
        await runner.cleanup()
        with contextlib.suppress(OSError):
            if url_file.read_text().strip() == base:
                url_file.unlink()


def _state_error(e: StateFileError) -> int:
    print(f"visual-runtime: cannot start: {e}", file=sys.stderr, flush=True)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        asyncio.run(run_gateway(_config(args)))
    except StateFileError as e:
        return _state_error(e)
    except (BackendError, OSError) as e:
        return _environment_error(e)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = _config(args)

    async def create_demo(base: str, token: str) -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.post(f"{base}/api/visual-sessions",
                                 json={"idle_timeout_minutes": 0,
                                       "timeout_minutes": args.minutes}) as resp:
                created = await resp.json()
                if resp.status != 201:
                    print(f"could not create the demo session: {created}", flush=True)
                    return
            sid = created["session_id"]
            async with http.get(f"{base}/api/visual-sessions/{sid}?wait=running") as resp:
                session = await resp.json()
        print(f"Demo session {sid}: {session['status']}", flush=True)
        if session.get("error"):
            print(f"  error: {session['error']}", flush=True)
        print(f"Open the viewer: {base}/sessions/{sid}/?token={created['tokens']['control']}",
              flush=True)
        print(f"Watch-only link: {base}/sessions/{sid}/?token={created['tokens']['view']}",
              flush=True)
        if session["status"] == "running" and not args.no_agent:
            print("A scripted demo agent drives the session; take control in the viewer "
                  "to pause it, release to let it go on.", flush=True)
            agents.add(asyncio.create_task(drive(base, token, sid)))
        print("Press Ctrl+C to stop.", flush=True)

    agents: set[asyncio.Task[None]] = set()

    async def stop_agents() -> None:
        for task in agents:
            task.cancel()
        for result in await asyncio.gather(*agents, return_exceptions=True):
            if isinstance(result, Exception):
                logger.warning("demo agent failed: %r", result)

    try:
        asyncio.run(run_gateway(config, create_demo, stop_agents))
    except StateFileError as e:
        return _state_error(e)
    except (BackendError, OSError) as e:
        return _environment_error(e)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check this machine for the settings ``serve`` would use; exit 0 iff all required pass."""
    from gateway.cli import doctor

    config = _config(args)
    options = doctor.DoctorOptions(
        backend=config.backend, state_dir=config.state_dir, runtime_dir=config.runtime_dir,
        host=config.host, port=config.port, apps=config.apps,
        docker_image=config.docker_image, recording_min_free_mb=config.recording_min_free_mb,
        recording_quota_mb=config.recording_quota_mb, uid_base=config.uid_base, config=config)
    if not args.json:
        print(f"Visual Runtime doctor: backend {config.backend}, state dir {config.state_dir}, "
              f"{config.host}:{config.port}", flush=True)

    def show(check: doctor.Check) -> None:
        if not args.json:
            print(doctor.format_check(check), flush=True)

    checks = doctor.run_checks(options, show)
    if args.json:
        print(json.dumps(doctor.to_json(checks, options), indent=2))
    else:
        print(doctor.format_report(checks))
    return 1 if any(c.failed for c in checks) else 0


def _environment_error(e: Exception) -> int:
    print(f"visual-runtime: cannot start: {e}\n"
          "Run `visual-runtime doctor` (with the same flags) to check this machine.",
          file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the real command line: keep the API token out of `ps`
        reexec_without_token()
    parser = argparse.ArgumentParser(prog="visual-runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    _add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)
    demo = sub.add_parser("demo", help="run the gateway with one demo session")
    _add_server_flags(demo)
    demo.add_argument("--minutes", type=int, default=60, help="demo session lifetime")
    demo.add_argument("--no-agent", action="store_true",
                      help="only create the session; do not run the scripted demo agent")
    demo.set_defaults(func=cmd_demo)
    doctor = sub.add_parser("doctor", help="check that this machine can run sessions "
                                           "(takes the flags of serve)")
    _add_server_flags(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable report")
    doctor.set_defaults(func=cmd_doctor)
    add_client_commands(sub)
    add_mcp_command(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
