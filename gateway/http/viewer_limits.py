"""A runtime agent's refusal of a viewer over a cap, as the gateway answers it.

The runtime agent counts viewers and offers (``agent_side.limits``) and
answers 429 (this token is over its budget) or 503 (the session is full) with
``Retry-After``; the gateway keeps the status and ``Retry-After``, turns the
body into a problem (``viewer-limit``) and files a ``viewer_refused`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.errors import ProblemError
from gateway.sessions.manager import SessionManager
from wire.agent_api import VIEWER_LIMIT_ERROR

__all__ = ["is_viewer_limit", "viewer_limit_problem"]

logger = logging.getLogger(__name__)

LIMIT_STATUSES = frozenset({429, 503})


def is_viewer_limit(status: int, body: Any) -> bool:
    """Whether an agent answer is a viewer-cap refusal (WHEP: the JSON body says so)."""
    return status in LIMIT_STATUSES and isinstance(body, dict) \
        and body.get("error") == VIEWER_LIMIT_ERROR


def viewer_limit_problem(manager: SessionManager, session_id: str, transport: str, status: int,
                         headers: Mapping[str, str] | None, reason: str | None,
                         detail: str | None = None) -> ProblemError:
    """The problem to raise for a refusal, after filing the ``viewer_refused`` event."""
    try:
        retry_after = max(1, int((headers or {}).get("Retry-After", "5")))
    except ValueError:
        retry_after = 5
    manager.events.emit(session_id, "viewer_refused", transport=transport, status=status,
                        **({"reason": reason} if reason else {}))
    logger.info("session %s: %s viewer refused (%d, %s)", session_id, transport, status,
                reason or "cap")
    if detail is None:
        detail = ("this token has too many viewers or offers open in the session"
                  if status == 429 else "the session has as many viewers as it takes")
    return ProblemError(status, "viewer-limit", "Viewer limit", detail + "; try again later",
                        headers={"Retry-After": str(retry_after)})
