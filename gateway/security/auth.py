"""Who is calling: the API token, or a session's ``view``/``control`` token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from gateway.errors import forbidden, unauthorized
from gateway.sessions.session import Session
from gateway.sessions.tokens import same_token, token_hash

TokenKind = Literal["api", "view", "control"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    kind: TokenKind
    token: str
    session_id: str | None
    """The session a view/control token belongs to (None for the API token)."""

    @property
    def token_id(self) -> str:
        """A stable, non-secret id of the token (what the runtime agent sees)."""
        return token_hash(self.token)[:32]

    @property
    def may_control(self) -> bool:
        return self.kind in ("api", "control")


def bearer(request: web.Request, *, allow_query: bool = False) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    if allow_query:
        token = request.query.get("token")
        if token:
            return token
    return None


class Authenticator:
    """Checks tokens against the API token and the live sessions' tokens."""

    def __init__(self, api_token: str, sessions: dict[str, Session] | None = None) -> None:
        self._api_token = api_token
        self._sessions = sessions if sessions is not None else {}

    def bind(self, sessions: dict[str, Session]) -> None:
        self._sessions = sessions

    def api(self, request: web.Request) -> Principal:
        """Only the API token (session management, actions)."""
        token = bearer(request)
        if token is None:
            raise unauthorized()
        if same_token(token, self._api_token):
            return Principal("api", token, None)
        if self._session_of(token) is not None:
            raise forbidden("this endpoint needs the API token, not a session token")
        raise unauthorized("the token is not valid")

    def session(self, request: web.Request, session: Session, *,
                allow_query: bool = False) -> Principal:
        """The API token, or a live token of *session* (403 for another session's)."""
        token = bearer(request, allow_query=allow_query)
        if token is None:
            raise unauthorized()
        if same_token(token, self._api_token):
            return Principal("api", token, None)
        digest = token_hash(token)
        if digest in session.revoked_tokens:
            raise unauthorized("this token was revoked")
        if not session.status.terminal and session.status.value != "stopping":
            if same_token(digest, session.view_token_hash):
                return Principal("view", token, session.session_id)
            if same_token(digest, session.control_token_hash):
                return Principal("control", token, session.session_id)
            issued = session.issued_tokens.get(digest)
            if issued in ("view", "control"):
                return Principal("view" if issued == "view" else "control", token,
                                 session.session_id)
        other = self._session_of(token)
        if other is not None and other.session_id != session.session_id:
            raise forbidden("this token belongs to another session")
        raise unauthorized("the token is not valid (or its session has ended)")

    def _session_of(self, token: str) -> Session | None:
        digest = token_hash(token)
        for s in self._sessions.values():
            if s.status.terminal or digest in s.revoked_tokens:
                continue
            if digest in (s.view_token_hash, s.control_token_hash) or digest in s.issued_tokens:
                return s
        return None
