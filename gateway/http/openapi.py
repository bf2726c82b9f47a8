"""OpenAPI 3.1 description of the public API (served at ``/api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from gateway.http.openapi_meta import finish

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_SID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(summary: str, responses: dict[str, Any], *, body: Any = None,
        params: list[Any] | None = None, security: str = "bearer") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if security == "bearer_or_query":
        op["security"] = [{"bearer": []}, {"token_query": []}]
    elif security:
        op["security"] = [{security: []}]
    return op


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_errors = {code: _PROBLEM for code in ("400", "401", "403", "404", "409", "413", "415", "422",
                                       "429")}
"""Every operation may answer these (429: a client address throttled after failed tokens)."""
_agent = {code: _PROBLEM for code in ("502", "503")}
"""Operations relayed to the session's runtime agent: 502 when it does not answer."""
_TOKEN_Q = {"name": "token", "in": "query", "schema": {"type": "string"},
            "description": "the session token, for browsers (the page link carries it)"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Visual Runtime", "version": "0.1.0",
             "description": "Disposable, isolated Linux desktops streamed live to a browser."},
    "paths": {
        "/api/visual-sessions": {
            "post": _op("Create a session", {
                "201": {"description": "Created", **_json("CreatedSession")},
                "503": _PROBLEM, **_errors}, body={"required": False, **_json("CreateSession")}),
            "get": _op("List sessions", {"200": {"description": "Sessions",
                                                 **_json("SessionList")}, **_errors},
                       params=[{"name": "status", "in": "query", "schema": {"type": "string"}}]),
        },
        "/api/visual-sessions/{session_id}": {
            "get": _op("Get a session", {"200": {"description": "Session", **_json("Session")},
                                         **_errors},
                       params=[_SID, {"name": "wait", "in": "query",
                                      "schema": {"enum": ["running"]}}]),
            "delete": _op("Stop and delete a session, its recording and files",
                          {"204": {"description": "Deleted"}, **_errors}, params=[_SID]),
        },
        "/api/visual-sessions/{session_id}/stop": {
            "post": _op("Stop a session (idempotent)", {
                "200": {"description": "Session", **_json("Session")}, **_errors}, params=[_SID]),
        },
        "/api/visual-sessions/{session_id}/tokens": {
            "post": _op("Mint another view or control token of a live session (extension)", {
                "201": {"description": "Token", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "session_id": {"type": "string"},
                        "kind": {"enum": ["view", "control"]},
                        "token": {"type": "string"},
                        "token_id": {"type": "string", "description": "first 32 hex digits "
                                     "of the token's SHA-256 (revoke with it)"},
                        "viewer_url": {"type": "string"}}}}}},
                **_errors}, params=[_SID], body={"required": False, "content": {
                    "application/json": {"schema": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "kind": {"enum": ["view", "control"], "default": "control"}}}}}}),
        },
        "/api/visual-sessions/{session_id}/tokens/{token_id}": {
            "delete": _op("Revoke a view or control token of a live session: refused from now "
                          "on, its viewers closed, control released (API token; extension)", {
                "200": {"description": "Revoked", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "session_id": {"type": "string"}, "token_id": {"type": "string"},
                        "kind": {"enum": ["view", "control"]},
                        "closed": {"type": "integer", "description": "connections closed"},
                        "released_control": {"type": "boolean"}}}}}},
                **_errors}, params=[_SID, {
                    "name": "token_id", "in": "path", "required": True,
                    "schema": {"type": "string"},
                    "description": "first 32 hex digits of the token's SHA-256 (token_id)"}]),
        },
        "/api/visual-sessions/{session_id}/control": {
            "get": _op("Who holds control", {"200": {"description": "Control",
                                                     **_json("Control")}, **_errors},
                       params=[_SID]),
            "post": _op("Take or release control (control or API token)", {
                "200": {"description": "Control", **_json("Control")}, **_errors, **_agent},
                params=[_SID], body={"required": True, **_json("ControlRequest")}),
        },
        "/api/visual-sessions/{session_id}/actions": {
            "post": _op("Run one Anthropic computer-use call: a tool input or a toolset member call "
                        "(API token)", {
                "200": {"description": "Result", **_json("ActionResult")}, **_errors, **_agent},
                params=[_SID], body={"required": True, **_json("AnthropicCall")}),
        },
        "/api/visual-sessions/{session_id}/actions/openai": {
            "post": _op("Run one OpenAI computer call: an action, a batch or a computer_call "
                        "item; answers with a screenshot (API token)", {
                "200": {"description": "Result", **_json("OpenAIResult")}, **_errors, **_agent},
                params=[_SID], body={"required": True, **_json("OpenAICall")}),
        },
        "/api/visual-sessions/{session_id}/screenshot": {
            "get": _op("PNG of the screen, at the agent's size (agent_resolution) unless "
                       "size=full", {
                "200": {"description": "PNG", "content": {"image/png": {}}}, **_errors, **_agent},
                params=[_SID, {"name": "size", "in": "query",
                               "schema": {"enum": ["agent", "full"], "default": "agent"}}]),
        },
        "/api/visual-sessions/{session_id}/whep": {
            "post": _op("WHEP: offer recvonly video, get the answer", {
                "201": {"description": "Answer", "content": {"application/sdp": {}},
                        "headers": {"Location": {"schema": {"type": "string"}},
                                    "Link": {"description": "one per --ice-server: "
                                             "<URL>; rel=\"ice-server\" (TURN: username, "
                                             "credential, credential-type)",
                                             "schema": {"type": "string"}}}},
                **_errors, **_agent}, params=[_SID],
                body={"required": True, "content": {"application/sdp": {}}}),
        },
        "/api/visual-sessions/{session_id}/whep/{peer_id}": {
            "delete": _op("End a WHEP peer", {"204": {"description": "Ended"}, **_errors,
                                              **_agent},
                          params=[_SID, {"name": "peer_id", "in": "path", "required": True,
                                         "schema": {"type": "string"}}]),
            "patch": _op("Trickle ICE: not supported (answers carry every candidate)", {
                "405": _PROBLEM, **_errors},
                params=[_SID, {"name": "peer_id", "in": "path", "required": True,
                               "schema": {"type": "string"}}],
                body={"required": False,
                      "content": {"application/trickle-ice-sdpfrag": {}}}),
        },
        "/api/visual-sessions/{session_id}/events": {
            "get": _op("Server-Sent Events (resumable with Last-Event-ID)", {
                "200": {"description": "Event stream", "content": {"text/event-stream": {}}},
                **_errors}, params=[_SID, _TOKEN_Q,
                                    {"name": "Last-Event-ID", "in": "header",
                                     "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                                    {"name": "last_event_id", "in": "query",
                                     "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
                security="bearer_or_query"),
        },
        "/api/visual-sessions/{session_id}/logs": {
            "get": _op("The newest events and process log lines as NDJSON, oldest first", {
                "200": {"description": "Log", "content": {"application/x-ndjson": {}}},
                **_errors}, params=[_SID, {
                    "name": "limit", "in": "query", "description": "entries to return",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 20000,
                               "default": 5000}}]),
        },
        "/api/visual-sessions/{session_id}/recording": {
            "get": _op("The session's recording (MP4, H.264); Range requests give 206/416", {
                "200": {"description": "MP4", "content": {"video/mp4": {}}},
                "206": {"description": "Part of the MP4", "content": {"video/mp4": {}}},
                "416": _PROBLEM, **_errors}, params=[_SID]),
        },
        "/api/visual-sessions/{session_id}/recording/chapters": {
            "get": _op("Chapters of agent actions and control changes (extension)", {
                "200": {"description": "WebVTT, or JSON with format=json",
                        "content": {"text/vtt": {}, "application/json": {}}}, **_errors},
                params=[_SID, {"name": "format", "in": "query",
                               "schema": {"enum": ["vtt", "json"]}}]),
        },
        "/api/visual-sessions/{session_id}/files": {
            "get": _op("List the shared folder (API or control token)", {
                "200": {"description": "Files", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"files": {"type": "array", "items": {
                        "type": "object", "properties": {
                            "path": {"type": "string"}, "size": {"type": "integer"},
                            "modified": {"type": "string"}}}}}}}}},
                **_errors}, params=[_SID]),
        },
        "/api/visual-sessions/{session_id}/files/{path}": {
            "get": _op("Download a file (Range supported)", {
                "200": {"description": "File", "content": {"application/octet-stream": {}}},
                "206": {"description": "Part of the file"}, "416": _PROBLEM, **_errors},
                params=[_SID, {"name": "path", "in": "path", "required": True,
                               "schema": {"type": "string"}}]),
            "put": _op("Upload a file (raw body; only while running)", {
                "201": {"description": "Stored"}, "200": {"description": "Replaced"},
                "413": _PROBLEM, "507": _PROBLEM, **_errors},
                params=[_SID, {"name": "path", "in": "path", "required": True,
                               "schema": {"type": "string"}}],
                body={"required": True, "content": {"application/octet-stream": {}}}),
        },
        "/sessions/{session_id}": {
            "get": _op("Redirect to the viewer page (trailing slash)", {
                "301": {"description": "Moved"}}, params=[_SID, _TOKEN_Q], security=""),
        },
        "/sessions/{session_id}/": {
            "get": _op("The viewer page (session, control or API token; ?token= allowed)", {
                "200": {"description": "HTML", "content": {"text/html": {}}}, **_errors},
                params=[_SID, _TOKEN_Q], security="bearer_or_query"),
        },
        "/sessions/{session_id}/info": {
            "get": _op("What the viewer page needs to know about its token", {
                "200": {"description": "Info", **_json("ViewerInfo")}, **_errors},
                params=[_SID, _TOKEN_Q], security="bearer_or_query"),
        },
        "/sessions/{session_id}/stream": {
            "get": _op("WebSocket: H.264 for WebCodecs plus input (Upgrade: websocket)", {
                "101": {"description": "Switching protocols"}, "426": _PROBLEM, **_errors,
                **_agent}, params=[_SID, _TOKEN_Q], security="bearer_or_query"),
        },
        "/sessions/{session_id}/vnc": {
            "get": _op("Redirect to the noVNC page (trailing slash)", {
                "301": {"description": "Moved"}}, params=[_SID, _TOKEN_Q], security=""),
        },
        "/sessions/{session_id}/vnc/": {
            "get": _op("The noVNC page", {
                "200": {"description": "HTML", "content": {"text/html": {}}}, "503": _PROBLEM,
                **_errors}, params=[_SID, _TOKEN_Q], security="bearer_or_query"),
        },
        "/sessions/{session_id}/vnc/websockify": {
            "get": _op("WebSocket: RFB for noVNC (Upgrade: websocket, subprotocol binary)", {
                "101": {"description": "Switching protocols"}, "426": _PROBLEM, **_errors,
                **_agent}, params=[_SID, _TOKEN_Q], security="bearer_or_query"),
        },
        "/api/openapi.json": {"get": _op("This document", {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            security="")},
        "/healthz": {"get": _op("Liveness", {"200": {"description": "ok"}}, security="")},
        "/metrics": {"get": {**_op(
            "Prometheus metrics: gateway-wide without a token, per session with the API token",
            {"200": {"description": "metrics"}, "401": _PROBLEM, "403": _PROBLEM},
            security=""), "security": [{}, {"bearer": []}]}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                            "token_query": {"type": "apiKey", "in": "query", "name": "token"}},
        "responses": {"Problem": {"description": "RFC 9457 problem details", "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}},
        "schemas": {
            "Problem": {"type": "object", "required": ["type", "title", "status"],
                        "properties": {
                            "type": {"type": "string"}, "title": {"type": "string"},
                            "status": {"type": "integer"}, "detail": {"type": "string"},
                            "errors": {"type": "array", "items": {
                                "type": "object", "properties": {
                                    "field": {"type": "string"},
                                    "message": {"type": "string"}}}}}},
            "CreateSession": {"type": "object", "additionalProperties": False, "properties": {
                "resolution": {"type": "string", "pattern": "^[0-9]{3,4}x[0-9]{3,4}$",
                               "default": "1600x900"},
                "timeout_minutes": {"type": "integer", "minimum": 1, "maximum": 1440,
                                    "default": 60},
                "idle_timeout_minutes": {"type": "integer", "minimum": 0, "maximum": 1440,
                                         "default": 15},
                "enable_recording": {"type": "boolean", "default": True},
                "enable_file_transfer": {"type": "boolean", "default": True},
                "network": {"enum": ["none", "egress"], "default": "egress"},
                "start_url": {"type": ["string", "null"], "format": "uri"},
                "agent_resolution": {
                    "type": ["string", "null"], "pattern": "^[0-9]{2,4}x[0-9]{2,4}$",
                    "description": "size of the screenshots the agent sees and of its "
                                   "coordinates; at most the resolution (null: the resolution)"}}},
            "Session": {"type": "object", "properties": {
                "session_id": {"type": "string"},
                "status": {"enum": ["starting", "running", "stopping", "stopped", "expired",
                                    "failed"]},
                "stop_reason": {"enum": [None, "requested", "timeout", "idle_timeout", "error",
                                         "shutdown"]},
                "backend": {"enum": ["local", "docker"]},
                "resolution": {"type": "string"},
                "agent_resolution": {"type": ["string", "null"]},
                "timeout_minutes": {"type": "integer"},
                "idle_timeout_minutes": {"type": "integer"},
                "enable_recording": {"type": "boolean"},
                "enable_file_transfer": {"type": "boolean"},
                "network": {"enum": ["none", "egress"]},
                "from_pool": {"type": "boolean", "description": "the session's pod was "
                              "claimed from the warm pool (--pool-size) rather than started"},
                "created_at": {"type": "string", "format": "date-time"},
                "started_at": {"type": ["string", "null"], "format": "date-time"},
                "expires_at": {"type": "string", "format": "date-time"},
                "ended_at": {"type": ["string", "null"], "format": "date-time"},
                "controller": {"enum": ["agent", "human"]},
                "viewers": {"type": "integer"},
                "urls": {"type": "object", "additionalProperties": {"type": "string"}},
                "error": {"type": ["string", "null"]}}},
            "CreatedSession": {"allOf": [{"$ref": "#/components/schemas/Session"}, {
                "type": "object", "properties": {"tokens": {"type": "object", "properties": {
                    "view": {"type": "string"}, "control": {"type": "string"}}}}}]},
            "SessionList": {"type": "object", "properties": {"sessions": {
                "type": "array", "items": {"$ref": "#/components/schemas/Session"}}}},
            "Control": {"type": "object", "properties": {
                "controller": {"enum": ["agent", "human"]},
                "since": {"type": "string", "format": "date-time"}}},
            "ControlRequest": {"type": "object", "required": ["action"],
                               "additionalProperties": False,
                               "properties": {"action": {"enum": ["take", "release"]}}},
            "ViewerInfo": {"type": "object", "properties": {
                "session_id": {"type": "string"}, "status": {"type": "string"},
                "token_kind": {"enum": ["api", "view", "control"]},
                "may_control": {"type": "boolean"}, "controller": {"enum": ["agent", "human"]},
                "holds_control": {"type": "boolean"}, "width": {"type": "integer"},
                "height": {"type": "integer"}, "enable_recording": {"type": "boolean"},
                "enable_file_transfer": {"type": "boolean"},
                "ice_servers": {"type": "array", "items": {"type": "object", "properties": {
                    "urls": {"type": "array", "items": {"type": "string"}},
                    "username": {"type": "string"}, "credential": {"type": "string"}}}},
                "embed_origins": {"type": "array", "items": {"type": "string"}}}},
        },
    },
}
finish(OPENAPI)
