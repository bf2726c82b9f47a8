"""HTTP handlers of the session API (``/api/visual-sessions``)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import ClientConnectionResetError, hdrs, web

from gateway.appkeys import AUTH, MANAGER
from gateway.errors import (
    FieldError,
    ProblemError,
    ValidationProblem,
    bad_request,
    forbidden,
    not_found,
    unauthorized,
    unsupported_media_type,
)
from gateway.http.ice import ice_servers_for, link_headers
from gateway.http.schemas import parse_control_request, parse_create_session, read_json_object
from gateway.http.viewer_limits import is_viewer_limit, viewer_limit_problem
from gateway.sessions import logs as session_logs
from gateway.sessions.agent_link import AgentUnavailable
from gateway.sessions.session import Session, SessionStatus, rfc3339
from gateway.sessions.tokens import token_hash
from wire import agent_api

logger = logging.getLogger(__name__)

WAIT_LIMIT_S = 30.0


def _session(request: web.Request) -> Session:
    return request.app[MANAGER].get(request.match_info["session_id"])


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unavailable(session: Session, e: AgentUnavailable) -> ProblemError:
    logger.warning("session %s: runtime agent unavailable: %s", session.session_id, e)
    return ProblemError(502, "runtime-agent-unavailable", "Runtime agent unavailable",
                        "the session's runtime agent did not answer; try again")


async def create_session(request: web.Request) -> web.Response:
    request.app[AUTH].api(request)
    body = await read_json_object(request, allow_empty=True)
    spec = parse_create_session(body)
    session, tokens = await request.app[MANAGER].create(spec)
    payload = session.to_public()
    payload["tokens"] = tokens
    return web.json_response(payload, status=201,
                             headers={"Location": f"/api/visual-sessions/{session.session_id}"})


async def list_sessions(request: web.Request) -> web.Response:
    request.app[AUTH].api(request)
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in SessionStatus}:
        raise ValidationProblem([FieldError("status", f"unknown status {status!r}")])
    sessions = [s.to_public() for s in request.app[MANAGER].list()
                if status is None or s.status.value == status]
    return web.json_response({"sessions": sessions})


async def get_session(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    session = _session(request)
    request.app[AUTH].session(request, session)
    wait = request.query.get("wait")
    if wait is not None:
        if wait != "running":
            raise ValidationProblem([FieldError("wait", f"only 'running' is supported, got {wait!r}")])
        await manager.wait_for_status(session.session_id, WAIT_LIMIT_S)
    return web.json_response(session.to_public())


async def stop_session(request: web.Request) -> web.Response:
    request.app[AUTH].api(request)
    session = await request.app[MANAGER].stop(request.match_info["session_id"])
    return web.json_response(session.to_public())


async def delete_session(request: web.Request) -> web.Response:
    request.app[AUTH].api(request)
    manager = request.app[MANAGER]
    manager.get(request.match_info["session_id"])
    await manager.delete(request.match_info["session_id"])
    return web.Response(status=204)


TOKEN_KINDS = ("view", "control")


async def issue_token(request: web.Request) -> web.Response:
    """Extension: mint another ``view``/``control`` token of a live session (API token)."""
    request.app[AUTH].api(request)
    manager = request.app[MANAGER]
    session = _session(request)
    body = await read_json_object(request, allow_empty=True)
    errors = [FieldError(k, f"unknown field {k!r}") for k in body if k != "kind"]
    kind = body.get("kind", "control")
    if kind not in TOKEN_KINDS:
        errors.append(FieldError("kind", f"must be 'view' or 'control', got {kind!r}"))
    if errors:
        raise ValidationProblem(errors)
    token = await manager.issue_token(session.session_id, str(kind))
    sid = session.session_id
    return web.json_response(
        {"session_id": sid, "kind": kind, "token": token, "token_id": token_hash(token)[:32],
         "viewer_url": f"/sessions/{sid}/?token={token}"},
        status=201, headers={"Cache-Control": "no-store"})


async def revoke_token(request: web.Request) -> web.Response:
    """Extension: revoke one of a live session's tokens by its id (API token)."""
    request.app[AUTH].api(request)
    session = _session(request)
    result = await request.app[MANAGER].revoke_token(session.session_id,
                                                     request.match_info["token_id"])
    return web.json_response(result, headers={"Cache-Control": "no-store"})


def _control_body(session: Session) -> dict[str, Any]:
    return {"controller": session.controller.value, "since": rfc3339(session.controller_since)}


async def get_control(request: web.Request) -> web.Response:
    session = _session(request)
    request.app[AUTH].session(request, session)
    return web.json_response(_control_body(session))


async def post_control(request: web.Request) -> web.Response:
    session = _session(request)
    who = request.app[AUTH].session(request, session)
    if not who.may_control:
        raise forbidden("a view token cannot take or release control")
    action = parse_control_request(await read_json_object(request))
    try:
        await request.app[MANAGER].set_control(session, action, who.token, by=who.kind)
    except AgentUnavailable as e:
        raise _unavailable(session, e) from e
    return web.json_response(_control_body(session))


async def whep_offer(request: web.Request) -> web.Response:
    session = _session(request)
    who = request.app[AUTH].session(request, session)
    if request.content_type != "application/sdp":
        raise unsupported_media_type("application/sdp", request.content_type)
    if session.status is SessionStatus.STARTING:
        # WHEP clients retry after Retry-After (the session is usually up in 1-3 s)
        raise ProblemError(409, "session-starting", "Session starting",
                           f"session {session.session_id} is starting; offer again shortly",
                           headers={"Retry-After": "1"})
    agent = request.app[MANAGER].agent(session)
    try:
        offer = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the SDP offer is not UTF-8 text") from None
    if not offer.strip():
        raise bad_request("the body must be an SDP offer")
    try:
        reply = await agent.request(
            "POST", "/whep", data=offer.encode(), timeout=20,
            headers={"Content-Type": "application/sdp", agent_api.TOKEN_KIND_HEADER: who.kind,
                     agent_api.TOKEN_ID_HEADER: who.token_id},
        )
    except AgentUnavailable as e:
        raise _unavailable(session, e) from e
    if reply.status != 201:
        detail = "the offer was refused"
        data = None
        try:
            data = reply.json()
            if isinstance(data, dict) and reply.status < 500:
                detail = str(data.get("detail", detail))
        except AgentUnavailable:
            pass
        if is_viewer_limit(reply.status, data):
            raise viewer_limit_problem(request.app[MANAGER], session.session_id, "webrtc",
                                       reply.status, reply.headers,
                                       str(data.get("reason")) if isinstance(data, dict) else None,
                                       detail)
        if reply.status >= 500:
            logger.warning("session %s: runtime agent failed on a WHEP offer (status %d)",
                           session.session_id, reply.status)
            detail = "the offer could not be negotiated"
        # 422, not 400: some WHEP players read 400 as "send an empty offer instead"
        raise ProblemError(422, "unanswerable-offer", "Offer cannot be answered", detail)
    peer_id = reply.headers.get(agent_api.PEER_ID_HEADER, "")

    async def close_peer() -> None:
        await agent.request("DELETE", agent_api.whep_peer(peer_id),
                            headers={agent_api.TOKEN_KIND_HEADER: "api",
                                     agent_api.TOKEN_ID_HEADER: ""})

    if request.app[MANAGER].live.add(session.session_id, who.token_id, close_peer) is None:
        await close_peer()  # its token was revoked while the offer was answered
        raise unauthorized("this token was revoked")
    # absolute, as the WHEP draft asks (clients resolve it against the endpoint anyway)
    location = (f"{request.scheme}://{request.host}"
                f"/api/visual-sessions/{session.session_id}/whep/{peer_id}")
    response = web.Response(status=201, body=reply.body, content_type="application/sdp",
                            headers={"Location": location, "Cache-Control": "no-store"})
    for link in link_headers(ice_servers_for(request, who)):
        response.headers.add(hdrs.LINK, link)
    return response


async def whep_delete(request: web.Request) -> web.Response:
    session = _session(request)
    who = request.app[AUTH].session(request, session)
    agent = request.app[MANAGER].agent(session)
    try:
        # The agent closes the peer only for the token that opened it (or the API token).
        reply = await agent.request("DELETE", agent_api.whep_peer(request.match_info["peer_id"]),
                                    headers={agent_api.TOKEN_KIND_HEADER: who.kind,
                                             agent_api.TOKEN_ID_HEADER: who.token_id})
    except AgentUnavailable as e:
        raise _unavailable(session, e) from e
    if reply.status == 404:
        raise not_found("no such WHEP resource")
    return web.Response(status=204)


async def whep_patch(request: web.Request) -> web.Response:
    """Trickle ICE is not needed: answers carry every candidate."""
    session = _session(request)
    request.app[AUTH].session(request, session)
    raise ProblemError(405, "method-not-allowed", "Method not allowed",
                       "trickle ICE is not supported; the answer includes all candidates",
                       headers={"Allow": "DELETE"})


async def events_stream(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    request.app[AUTH].session(request, session, allow_query=True)
    hub = request.app[MANAGER].events
    raw_last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    try:
        after = int(raw_last)
    except ValueError:
        raise bad_request(f"Last-Event-ID must be an integer, got {raw_last!r}") from None
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    await resp.write(b"retry: 2000\n\n")
    ended = session.status.terminal
    if ended and not hub.history(session.session_id, after, limit=1):
        return resp
    try:
        async for event in hub.follow(session.session_id, after):
            data = json.dumps({k: v for k, v in event.items() if k != "id"})
            await resp.write(
                f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n".encode())
            if event["type"] == "status" and event.get("status") in ("stopped", "expired",
                                                                      "failed"):
                ended = True
            if ended and not hub.history(session.session_id, event["id"], limit=1):
                break
    except (ConnectionResetError, ClientConnectionResetError):
        pass  # the reader went away; nothing to clean up beyond the generator
    return resp


async def get_logs(request: web.Request) -> web.StreamResponse:
    """The newest ``?limit=`` entries (events and process log lines), oldest first."""
    session = _session(request)
    request.app[AUTH].session(request, session)
    raw = request.query.get("limit", str(session_logs.DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= session_logs.MAX_LIMIT:
        raise ValidationProblem([FieldError(
            "limit", f"must be an integer from 1 to {session_logs.MAX_LIMIT}, got {raw!r}")])
    logs_dir = request.app[MANAGER].session_dir(session) / "logs"
    entries = await asyncio.to_thread(session_logs.tail_entries, logs_dir, int(raw))
    return web.Response(text=session_logs.to_ndjson(entries), content_type="application/x-ndjson")


def setup_routes(app: web.Application) -> None:
    r = app.router
    base = "/api/visual-sessions"
    r.add_post(base, create_session)
    r.add_get(base, list_sessions)
    r.add_get(base + "/{session_id}", get_session)
    r.add_delete(base + "/{session_id}", delete_session)
    r.add_post(base + "/{session_id}/stop", stop_session)
    r.add_post(base + "/{session_id}/tokens", issue_token)
    r.add_delete(base + "/{session_id}/tokens/{token_id}", revoke_token)
    r.add_get(base + "/{session_id}/control", get_control)
    r.add_post(base + "/{session_id}/control", post_control)
    r.add_post(base + "/{session_id}/whep", whep_offer)
    r.add_delete(base + "/{session_id}/whep/{peer_id}", whep_delete)
    r.add_patch(base + "/{session_id}/whep/{peer_id}", whep_patch)
    r.add_get(base + "/{session_id}/events", events_stream)
    r.add_get(base + "/{session_id}/logs", get_logs)
