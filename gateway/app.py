"""``create_app(config)``: the one place where the gateway is wired together.

Start order: store -> backend -> warm pool leftovers removed -> session manager
(re-adopts pods) -> warm pool refill -> routes. Shutdown reverses it: live SSE
readers are closed, the warm pool's pods removed, every session is stopped
(reason ``shutdown``), then the backend and the store are closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.appkeys import AUTH, BACKEND, CONFIG, MANAGER
from gateway.backends import create_backend
from gateway.config import GatewayConfig
from gateway.errors import ProblemError, problem_response
from gateway.http import api, cdp, ops, viewer
from gateway.http.actions import setup_routes as setup_action_routes
from gateway.mcp import setup_mcp
from gateway.media import files, recordings
from gateway.security.auth import Authenticator
from gateway.security.conncap import CONNECTIONS, ConnectionCaps
from gateway.security.cors import cors_middleware, setup_cors
from gateway.security.hardening import hardening_middleware, setup_hardening
from gateway.sessions import logs as session_logs
from gateway.sessions.events import EventHub
from gateway.sessions.manager import SessionManager
from gateway.sessions.pool import WarmPool
from gateway.sessions.session import SessionStatus
from gateway.sessions.store import SessionStore

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_SLUGS = {400: "malformed-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 413: "payload-too-large", 415: "unsupported-media-type",
               429: "too-many-requests"}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as RFC 9457 problem details; never a stack trace."""
    try:
        return await handler(request)
    except ProblemError as e:
        return e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        slug = _HTTP_SLUGS.get(e.status, "http-error")
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        return problem_response(e.status, {
            "type": "https://visual-runtime.dev/problems/" + slug, "title": e.reason,
            "status": e.status, "detail": detail}, headers)
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(500, {
            "type": "https://visual-runtime.dev/problems/internal-error",
            "title": "Internal server error", "status": 500,
            "detail": "the gateway hit an unexpected error; it has been logged"})


def create_app(config: GatewayConfig, api_token: str) -> web.Application:
    app = web.Application(middlewares=[problem_middleware, hardening_middleware, cors_middleware],
                          client_max_size=1024 * 1024)
    app[CONFIG] = config
    setup_hardening(app, config)
    setup_cors(app)
    app[AUTH] = Authenticator(api_token)
    app[CONNECTIONS] = ConnectionCaps.from_settings(config.max_connections,
                                                    config.max_connections_per_client)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # Recordings, shared folders, logs, the token and the database: root's only
        # (pods reach their own folders through bind mounts made as root).
        config.state_dir.mkdir(parents=True, exist_ok=True)
        config.state_dir.chmod(0o700)
        store = SessionStore(config.db_file)
        store.open()
        backend = create_backend(config)
        events = EventHub(lambda sid: config.sessions_dir / sid / "logs",
                          max_bytes=config.event_log_max_mb * 1024 * 1024)
        manager = SessionManager(config, backend, store, events)
        app[BACKEND] = backend
        app[MANAGER] = manager
        app[AUTH].bind(manager.by_id)
        pool = WarmPool(config, backend, manager.slots, manager.live_count, manager.cold_starts)
        await pool.remove_leftovers()  # what a crashed gateway left in its pool
        await manager.start()
        manager.pool = pool
        await pool.start()
        log_cap = asyncio.create_task(session_logs.watch(
            lambda: [manager.session_dir(s) / "logs" for s in manager.list()
                     if s.status is SessionStatus.RUNNING],
            config.session_log_max_mb * 1024 * 1024))
        try:
            yield
        finally:
            log_cap.cancel()
            await asyncio.gather(log_cap, return_exceptions=True)
            await pool.aclose()
            await manager.aclose()
            await backend.aclose()
            store.close()

    async def on_shutdown(app: web.Application) -> None:
        if MANAGER in app:
            for session in app[MANAGER].list():
                app[MANAGER].events.close_readers(session.session_id)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    api.setup_routes(app)
    files.setup_routes(app)
    recordings.setup_routes(app)
    viewer.setup_routes(app)
    cdp.setup_routes(app)
    ops.setup_routes(app)
    setup_action_routes(app)
    setup_mcp(app, api_token)
    return app
