"""Operations endpoints: ``/healthz``, ``/metrics``, ``/api/openapi.json``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from gateway.appkeys import AUTH, MANAGER
from gateway.http.openapi import OPENAPI
from gateway.security.auth import bearer
from gateway.security.conncap import CONNECTIONS
from gateway.sessions.pool import WarmPool
from gateway.sessions.session import SessionStatus
from gateway.sessions.startup import StartupHistograms
from gateway.sessions.watchdog import closed_viewers


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def _metric(lines: list[str], name: str, kind: str, help_: str,
            samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{labels} {value:g}")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text. Series per session (they name session ids) only for the API
    token; without an ``Authorization`` header, the gateway-wide ones."""
    manager = request.app[MANAGER]
    per_session: dict[str, dict[str, Any]] = {}
    if bearer(request) is not None:
        request.app[AUTH].api(request)  # 401/403 for any other token
        per_session = dict(manager.agent_stats)
    sessions = manager.list()
    by_status = Counter(s.status.value for s in sessions)
    lines: list[str] = []
    _metric(lines, "visual_runtime_sessions", "gauge", "Sessions by status.",
            [(f'{{status="{st.value}"}}', by_status.get(st.value, 0)) for st in SessionStatus])
    _metric(lines, "visual_runtime_viewers", "gauge", "Connected WebRTC viewers.",
            [("", sum(s.viewers for s in sessions))])
    _metric(lines, "visual_runtime_sessions_created_total", "counter", "Sessions created.",
            [("", manager.counters["sessions_created"])])
    _metric(lines, "visual_runtime_actions_total", "counter", "Agent actions accepted.",
            [("", manager.counters["actions"])])
    _metric(lines, "visual_runtime_errors_total", "counter", "Session start/stop errors.",
            [("", manager.counters["errors"])])
    _metric(lines, "visual_runtime_agent_restarts_total", "counter",
            "Crashed runtime agents restarted in their pod (--agent-restarts).",
            [("", manager.counters.get("agent_restarts", 0))])
    _metric(lines, "visual_runtime_resource_limit_hits_total", "counter",
            "App sandbox limit hits: forks refused (pids), processes OOM-killed (memory).",
            [(f'{{kind="{kind}"}}', n) for kind, n in sorted(manager.limits.hits.items())])
    dropped: list[tuple[str, float]] = []
    for sid, stats in per_session.items():
        by_reason = stats.get("input_dropped")
        if isinstance(by_reason, dict):
            dropped += [(f'{{session="{sid}",reason="{reason}"}}', float(n))
                        for reason, n in sorted(by_reason.items()) if isinstance(n, int | float)]
        for key, reason in (("vnc_input_refused", "vnc_not_in_control"),
                            ("vnc_protocol_errors", "vnc_protocol_error")):
            value = stats.get(key)
            if isinstance(value, int | float):
                dropped.append((f'{{session="{sid}",reason="{reason}"}}', float(value)))
    _metric(lines, "visual_runtime_input_dropped_total", "counter",
            "Viewer input messages dropped by a session's runtime agent, by reason.", dropped)
    refused: list[tuple[str, float]] = []
    closed: list[tuple[str, float]] = []
    for sid, stats in per_session.items():
        limits = stats.get("limits")
        by_reason = limits.get("refused") if isinstance(limits, dict) else None
        if isinstance(by_reason, dict):
            refused += [(f'{{session="{sid}",reason="{reason}"}}', float(n))
                        for reason, n in sorted(by_reason.items()) if isinstance(n, int | float)]
        closed += [(f'{{session="{sid}",reason="{reason}"}}', float(n))
                   for reason, n in sorted(closed_viewers(stats).items())]
    _metric(lines, "visual_runtime_viewers_refused_total", "counter",
            "Viewers and WHEP offers a session's runtime agent refused at a cap, by reason.",
            refused)
    _metric(lines, "visual_runtime_viewers_closed_total", "counter",
            "Viewers a session's runtime agent closed (ghost peer, oversize data-channel "
            "message, slow viewer).", closed)
    frames: list[tuple[str, float]] = []
    encode_ms: list[tuple[str, float]] = []
    sent: list[tuple[str, float]] = []
    rates: list[tuple[str, float]] = []
    refinements: list[tuple[str, float]] = []
    for sid, stats in per_session.items():
        media = stats.get("media")
        if not isinstance(media, dict):
            continue
        label = f'{{session="{sid}"}}'
        encoded = media.get("frames_encoded", {})
        if isinstance(encoded, dict):
            frames.append((label, float(encoded.get("total", 0))))
        enc = media.get("encode_ms", {})
        if isinstance(enc, dict) and enc:
            encode_ms.append((label, float(max(enc.values()))))
        out = media.get("bytes_encoded", {})
        if isinstance(out, dict):
            sent.append((label, float(out.get("total", 0))))
        fps = media.get("fps", {})
        if isinstance(fps, dict):
            rates += [(f'{{session="{sid}",kind="{kind}"}}', float(fps[kind]))
                      for kind in ("effective", "governed", "cap")
                      if isinstance(fps.get(kind), int | float)]
        if isinstance(media.get("refinements"), int):
            refinements.append((label, float(media["refinements"])))
    _metric(lines, "visual_runtime_frames_encoded_total", "counter",
            "Frames encoded by a session's runtime agent (all viewers share them).", frames)
    _metric(lines, "visual_runtime_encode_milliseconds", "gauge",
            "Mean encode time per frame.", encode_ms)
    _metric(lines, "visual_runtime_encoded_bytes_total", "counter",
            "Encoded video bytes produced (sent to every viewer).", sent)
    _metric(lines, "visual_runtime_frame_rate", "gauge",
            "Frames a second: encoded over the last second (effective), allowed by the "
            "governor (governed), configured cap (cap).", rates)
    _metric(lines, "visual_runtime_refinements_total", "counter",
            "Near-lossless refinements encoded after the screen settled.", refinements)
    _pool_metrics(lines, manager.pool, manager.startup)
    caps = request.app[CONNECTIONS]
    _metric(lines, "visual_runtime_connections", "gauge",
            "Open client connections to the gateway's port (all clients).",
            [("", float(caps.open_total))])
    _metric(lines, "visual_runtime_connection_limit", "gauge",
            "Caps on open connections: in all (total), per client address (per_client).",
            [('{scope="total"}', float(caps.max_connections)),
             ('{scope="per_client"}', float(caps.max_per_client))])
    _metric(lines, "visual_runtime_connections_refused_total", "counter",
            "Connections refused (503 or closed) over a cap, by the cap.",
            [(f'{{reason="{r}"}}', float(n)) for r, n in sorted(caps.refused.items())])
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain",
                        charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})


def _pool_metrics(lines: list[str], pool: WarmPool | None, startup: StartupHistograms) -> None:
    """The warm pool (``--pool-size``) and where start-up time goes."""
    if pool is not None:
        _metric(lines, "visual_runtime_pool_pods", "gauge",
                "Warm-pool pods by pool key: target, ready to claim, starting.",
                [(f'{{key="{key}",state="{state}"}}', float(n))
                 for key, d in sorted(pool.describe().items()) for state, n in sorted(d.items())])
        for name, counter, help_ in (
                ("claims", "claimed", "Sessions served from the warm pool."),
                ("misses", "misses", "Creates the warm pool could not serve (cold starts)."),
                ("started", "started", "Warm-pool pods made ready."),
                ("failed", "failed", "Warm-pool pods that failed to start."),
                ("replaced", "replaced_stale", "Warm-pool pods replaced for age or memory."),
                ("dead", "replaced_dead", "Warm-pool pods replaced because they died."),
                ("evicted", "evicted", "Warm-pool pods given up for a cold start's place.")):
            _metric(lines, f"visual_runtime_pool_{name}_total", "counter", help_,
                    [("", float(pool.counters[counter]))])
    lines.extend(startup.prometheus("visual_runtime_start_span_seconds"))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)
