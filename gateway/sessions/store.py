"""SQLite persistence of session records, so a restarted gateway can re-adopt pods.

Writes are a single small row in WAL mode (well under a millisecond), so they
run inline on the event loop rather than in a thread.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import StateFileError
from gateway.sessions.session import Controller, Session, SessionStatus, StopReason
from gateway.spec import SessionSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL
)
"""


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _encode(session: Session) -> str:
    spec = session.spec
    record: dict[str, Any] = {
        "spec": {
            "resolution": list(spec.resolution),
            "timeout_minutes": spec.timeout_minutes,
            "idle_timeout_minutes": spec.idle_timeout_minutes,
            "enable_recording": spec.enable_recording,
            "enable_file_transfer": spec.enable_file_transfer,
            "network": spec.network,
            "start_url": spec.start_url,
            "agent_resolution": list(spec.agent_resolution) if spec.agent_resolution else None,
        },
        "backend": session.backend,
        "created_at": session.created_at.isoformat(),
        "view_token_hash": session.view_token_hash,
        "control_token_hash": session.control_token_hash,
        "slot": session.slot,
        "status": session.status.value,
        "stop_reason": session.stop_reason.value if session.stop_reason else None,
        "started_at": session.started_at.isoformat() if session.started_at else None,
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "controller": session.controller.value,
        "controller_since": session.controller_since.isoformat(),
        "controller_token_hash": session.controller_token_hash,
        "issued_tokens": session.issued_tokens,
        "revoked_tokens": sorted(session.revoked_tokens),
        "last_activity": session.last_activity.isoformat(),
        "error": session.error,
        "minute_s": session.minute_s,
        "pod": session.pod,
        "from_pool": session.from_pool,
    }
    return json.dumps(record)


def _decode(session_id: str, raw: str) -> Session:
    r = json.loads(raw)
    s = r["spec"]
    spec = SessionSpec(
        resolution=(int(s["resolution"][0]), int(s["resolution"][1])),
        timeout_minutes=s["timeout_minutes"],
        idle_timeout_minutes=s["idle_timeout_minutes"],
        enable_recording=s["enable_recording"],
        enable_file_transfer=s["enable_file_transfer"],
        network=s["network"],
        start_url=s["start_url"],
        agent_resolution=((int(s["agent_resolution"][0]), int(s["agent_resolution"][1]))
                          if s.get("agent_resolution") else None),
    )
    created = _dt(r["created_at"])
    assert created is not None
    session = Session(
        session_id=session_id,
        spec=spec,
        backend=r["backend"],
        created_at=created,
        view_token_hash=r["view_token_hash"],
        control_token_hash=r["control_token_hash"],
        slot=r["slot"],
        status=SessionStatus(r["status"]),
        stop_reason=StopReason(r["stop_reason"]) if r["stop_reason"] else None,
        started_at=_dt(r["started_at"]),
        ended_at=_dt(r["ended_at"]),
        controller=Controller(r["controller"]),
        controller_token_hash=r["controller_token_hash"],
        issued_tokens=dict(r.get("issued_tokens") or {}),
        revoked_tokens=set(r.get("revoked_tokens") or ()),
        error=r["error"],
        minute_s=float(r.get("minute_s", 60.0)),
        pod=r["pod"],
        from_pool=bool(r.get("from_pool", False)),
    )
    session.controller_since = _dt(r["controller_since"]) or created
    session.last_activity = _dt(r["last_activity"]) or created
    return session


class SessionStore:
    """Session rows in ``sessions.sqlite3``; one connection, used from the event loop."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (or create) the database; :class:`StateFileError` if it is unusable.

        An existing file is checked (integrity, schema, every record decodes)
        before anything is written to it, so a corrupt file is left exactly as
        it was for the operator to inspect.
        """
        self._path.parent.mkdir(parents=True, exist_ok=True)
        existed = self._path.exists()
        try:
            db = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error as e:
            raise self._unusable(f"cannot be opened ({e})") from None
        try:
            if existed:
                self._check(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.Error as e:
            db.close()
            raise self._unusable(f"is not a usable SQLite database ({e})") from None
        except StateFileError:
            db.close()
            raise
        self._db = db

    def _unusable(self, why: str) -> StateFileError:
        return StateFileError(
            f"the session database {self._path} {why}. Nothing was changed. Move it aside "
            f"(mv {self._path} {self._path}.broken) to start with no sessions, or restore it "
            f"from a backup; session folders, recordings and logs stay where they are.")

    def _check(self, db: sqlite3.Connection) -> None:
        """Read-only checks of an existing database file."""
        result = db.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise self._unusable(f"is damaged (integrity check: {result[0] if result else '?'})")
        tables = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return
        if "sessions" not in tables:
            raise self._unusable(f"is not a session database (tables: {sorted(tables)})")
        columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
        missing = {"session_id", "status", "created_at", "record"} - columns
        if missing:
            raise self._unusable(f"has an unknown schema (no columns {sorted(missing)})")
        self.load_all(db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("session store is not open")
        return self._db

    def save(self, session: Session) -> None:
        self.db.execute(
            "INSERT INTO sessions(session_id, status, created_at, record) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(session_id) DO UPDATE SET status=excluded.status, record=excluded.record",
            (session.session_id, session.status.value, session.created_at.isoformat(),
             _encode(session)),
        )

    def delete(self, session_id: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))

    def load_all(self, db: sqlite3.Connection | None = None) -> list[Session]:
        rows = (db or self.db).execute(
            "SELECT session_id, record FROM sessions ORDER BY created_at"
        ).fetchall()
        sessions = []
        for sid, record in rows:
            try:
                sessions.append(_decode(sid, record))
            except (ValueError, TypeError, KeyError, IndexError, AssertionError) as e:
                raise self._unusable(
                    f"has an unreadable record of session {sid!r} ({type(e).__name__})") from None
        return sessions
