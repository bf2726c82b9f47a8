"""What makes the OpenAPI document generate working clients: ids, tags, media schemas, headers.

:func:`finish` completes the hand-written paths of :mod:`gateway.http.openapi`:

* an ``operationId`` and a tag on every operation (from :data:`OPERATIONS`, or
  derived from the method and path for a route not listed there yet, so ids stay
  unique), and a request example where the body is JSON;
* a schema for every media type (``image/png`` and the other binaries as
  ``format: binary``, ``application/sdp``, NDJSON, HTML, SSE and WebVTT as strings);
* the ``Retry-After`` header on every 429/503 answer and on a failed screenshot's
  502, ``Location`` on what a 201 creates, ``ETag`` (with ``If-None-Match`` ->
  304 and ``If-Range``) on downloads;
* the computer-use dialects' schemas (:mod:`gateway.http.openapi_actions`).
"""

from __future__ import annotations

from typing import Any, Final

from gateway.http.openapi_actions import ACTION_COMPONENTS, ANTHROPIC_EXAMPLE, OPENAI_EXAMPLE

__all__ = ["OPERATIONS", "finish"]

S = "/api/visual-sessions"
V = "/sessions/{session_id}"

OPERATIONS: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("post", S): ("create_session", "sessions"),
    ("get", S): ("list_sessions", "sessions"),
    ("get", S + "/{session_id}"): ("get_session", "sessions"),
    ("delete", S + "/{session_id}"): ("delete_session", "sessions"),
    ("post", S + "/{session_id}/stop"): ("stop_session", "sessions"),
    ("post", S + "/{session_id}/tokens"): ("issue_token", "sessions"),
    ("delete", S + "/{session_id}/tokens/{token_id}"): ("revoke_token", "sessions"),
    ("get", S + "/{session_id}/control"): ("get_control", "control"),
    ("post", S + "/{session_id}/control"): ("set_control", "control"),
    ("post", S + "/{session_id}/actions"): ("act", "actions"),
    ("post", S + "/{session_id}/actions/openai"): ("act_openai", "actions"),
    ("get", S + "/{session_id}/screenshot"): ("get_screenshot", "actions"),
    ("post", S + "/{session_id}/whep"): ("whep_offer", "streaming"),
    ("delete", S + "/{session_id}/whep/{peer_id}"): ("whep_delete", "streaming"),
    ("patch", S + "/{session_id}/whep/{peer_id}"): ("whep_patch", "streaming"),
    ("get", S + "/{session_id}/events"): ("follow_events", "events"),
    ("get", S + "/{session_id}/logs"): ("get_logs", "events"),
    ("get", S + "/{session_id}/recording"): ("get_recording", "media"),
    ("get", S + "/{session_id}/recording/chapters"): ("get_recording_chapters", "media"),
    ("get", S + "/{session_id}/files"): ("list_files", "media"),
    ("get", S + "/{session_id}/files/{path}"): ("download_file", "media"),
    ("put", S + "/{session_id}/files/{path}"): ("upload_file", "media"),
    ("get", V): ("viewer_redirect", "viewer"),
    ("get", V + "/"): ("viewer_page", "viewer"),
    ("get", V + "/info"): ("viewer_info", "viewer"),
    ("get", V + "/stream"): ("viewer_stream", "viewer"),
    ("get", V + "/vnc"): ("vnc_redirect", "viewer"),
    ("get", V + "/vnc/"): ("vnc_page", "viewer"),
    ("get", V + "/vnc/websockify"): ("vnc_websocket", "viewer"),
    ("get", "/api/openapi.json"): ("get_openapi", "operations"),
    ("get", "/healthz"): ("healthz", "operations"),
    ("get", "/metrics"): ("metrics", "operations"),
}
"""(method, path) -> (operationId, tag) of every operation."""

TAGS: Final = [
    {"name": "sessions", "description": "Create, list, stop and delete desktop sessions"},
    {"name": "actions", "description": "Computer-use actions (Anthropic and OpenAI shapes) "
                                       "and screenshots, in the agent's picture"},
    {"name": "control", "description": "Who drives: the agent or a human"},
    {"name": "streaming", "description": "Live video over WHEP"},
    {"name": "events", "description": "Session events and logs"},
    {"name": "media", "description": "Recordings and the shared folder"},
    {"name": "viewer", "description": "The viewer pages and their WebSockets"},
    {"name": "operations", "description": "Health, metrics and this document"},
    {"name": "mcp", "description": "MCP over streamable HTTP at /mcp (JSON-RPC, not described "
                                   "here; see docs/mcp.md)"},
]

_BINARY: Final = {"type": "string", "format": "binary"}
_TEXT: Final = {"type": "string"}
MEDIA_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "image/png": _BINARY, "video/mp4": _BINARY, "application/octet-stream": _BINARY,
    "application/sdp": _TEXT, "application/trickle-ice-sdpfrag": _TEXT,
    "application/x-ndjson": {"type": "string", "description": "one JSON object per line"},
    "text/html": _TEXT, "text/event-stream": _TEXT, "text/vtt": _TEXT, "text/plain": _TEXT,
    "application/json": {"type": "object"},
}

EXAMPLES: Final[dict[tuple[str, str], Any]] = {
    ("post", S): {"resolution": "1600x900", "agent_resolution": "1280x720",
                  "start_url": "https://example.com/"},
    ("post", S + "/{session_id}/tokens"): {"kind": "view"},
    ("post", S + "/{session_id}/control"): {"action": "take"},
    ("post", S + "/{session_id}/actions"): ANTHROPIC_EXAMPLE,
    ("post", S + "/{session_id}/actions/openai"): OPENAI_EXAMPLE,
}

_RETRY_AFTER: Final = {"description": "seconds to wait before trying again",
                       "schema": {"type": "integer", "minimum": 0}}
_LOCATION: Final = {"description": "URL of what was created", "schema": {"type": "string"}}
_ETAG: Final = {"description": "the file's version (size and modification time); it changes "
                               "while a recording grows", "schema": {"type": "string"}}
DOWNLOADS: Final = {("get", S + "/{session_id}/recording"), ("get", S + "/{session_id}/files/{path}")}
"""Operations served by ``gateway.media.files.send_fd``: Range, ETag, If-None-Match, If-Range."""
_CONDITIONAL: Final = [
    {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
     "description": text} for name, text in (
        ("Range", "one 'bytes=' range: 206 with that part, 416 if it lies past the end"),
        ("If-None-Match", "an ETag: 304 when the file is still that version"),
        ("If-Range", "an ETag: the Range applies only to that version, else 200 with all"))]


def _media(content: dict[str, Any]) -> None:
    for media_type, media in content.items():
        if "schema" not in media:
            media["schema"] = dict(MEDIA_SCHEMAS.get(media_type, _BINARY))


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    """Complete *doc* in place (see the module docstring); returns it."""
    schemas = doc["components"]["schemas"]
    schemas.update(ACTION_COMPONENTS)
    doc["tags"] = TAGS
    responses = doc["components"]["responses"]
    responses["ProblemRetry"] = {
        "description": "RFC 9457 problem details; try again after Retry-After",
        "headers": {"Retry-After": _RETRY_AFTER},
        "content": responses["Problem"]["content"]}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            key = (method, path)
            derived = (method + "_" + "_".join(
                part.strip("{}").replace("-", "_").replace(".", "_")
                for part in path.split("/") if part), "other")
            op["operationId"], tag = OPERATIONS.get(key, derived)
            op.setdefault("tags", [tag])
            if key in DOWNLOADS:
                op.setdefault("parameters", []).extend(_CONDITIONAL)
                op["responses"]["304"] = {"description": "Not modified (If-None-Match)",
                                          "headers": {"ETag": _ETAG}}
                for status in ("200", "206"):
                    op["responses"][status].setdefault("headers", {})["ETag"] = _ETAG
            body = op.get("requestBody")
            if body is not None:
                _media(body.get("content", {}))
                if key in EXAMPLES:
                    body["content"]["application/json"]["example"] = EXAMPLES[key]
            for status, response in op["responses"].items():
                if status in ("429", "503") or (status == "502" and path.endswith("/screenshot")):
                    op["responses"][status] = {"$ref": "#/components/responses/ProblemRetry"}
                    continue
                if "$ref" in response:
                    continue
                _media(response.get("content", {}))
                if status == "201":
                    response.setdefault("headers", {})["Location"] = _LOCATION
    return doc
