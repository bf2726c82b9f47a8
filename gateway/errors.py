"""Gateway exceptions and their RFC 9457 problem-details form.

Hierarchy::

    GatewayError                  base of everything the gateway raises on purpose
    ├── ProblemError              an HTTP-visible error (status, type, title, detail)
    │   ├── ValidationProblem     422 with per-field ``errors``
    │   └── CapacityProblem       503 with ``Retry-After``
    ├── BackendError              a session backend could not start/stop a pod
    └── StateFileError            a state file (session database, API token) is unusable
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

PROBLEM_BASE = "https://visual-runtime.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class GatewayError(Exception):
    """Base class of the gateway's own exceptions."""


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a request body."""

    field: str
    """Dotted name of the field (``resolution``, ``action.coordinate``)."""
    message: str
    """What is wrong, quoting the bad value."""


class ProblemError(GatewayError):
    """An error that is answered as ``application/problem+json``."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body

    def response(self) -> web.Response:
        return problem_response(self.status, self.body(), self.headers)


class ValidationProblem(ProblemError):
    """422 with the list of invalid fields."""

    def __init__(self, errors: list[FieldError], detail: str = "") -> None:
        self.errors = errors
        summary = detail or "; ".join(f"{e.field}: {e.message}" for e in errors)
        super().__init__(
            422,
            "validation-error",
            "Request validation failed",
            summary,
            extra={"errors": [{"field": e.field, "message": e.message} for e in errors]},
        )


class CapacityProblem(ProblemError):
    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(
            503,
            "at-capacity",
            "At capacity",
            detail,
            headers={"Retry-After": str(retry_after)},
        )


class BackendError(GatewayError):
    """A backend failed to start, inspect or stop a pod."""


class StateFileError(GatewayError):
    """A file in the state dir is unreadable or corrupt.

    Raised at start-up before anything is written; the message names the file
    and what to do. ``visual-runtime serve`` prints it and exits with status 2.
    """


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def bad_request(detail: str) -> ProblemError:
    return ProblemError(400, "malformed-request", "Malformed request", detail)


def unauthorized(detail: str = "A valid bearer token is required.") -> ProblemError:
    return ProblemError(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, "forbidden", "Forbidden", detail)


def not_found(detail: str) -> ProblemError:
    return ProblemError(404, "not-found", "Not found", detail)


def conflict(slug: str, detail: str, title: str = "Conflict") -> ProblemError:
    return ProblemError(409, slug, title, detail)


def unsupported_media_type(expected: str, got: str) -> ProblemError:
    return ProblemError(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        f"expected Content-Type {expected!r}, got {got!r}",
    )
