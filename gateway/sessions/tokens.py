"""Bearer tokens: generation, hashing and the API token file."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from gateway.errors import StateFileError

logger = logging.getLogger(__name__)


def _word(nbytes: int) -> str:
    """*nbytes* random bytes, url-safe, never starting with ``-`` or ``_``: safe as a
    command-line argument (``--token -x...`` would read as an option) and as a file
    name."""
    while True:
        word = secrets.token_urlsafe(nbytes)
        if word[0].isalnum():
            return word


def new_token() -> str:
    """A url-safe random token with 256 bits of entropy (less the first character's
    two excluded values); see :func:`_word`."""
    return _word(32)


def new_session_id() -> str:
    """A url-safe random session id with 128 bits of entropy; see :func:`_word`."""
    return _word(16)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _unusable(path: Path, why: str) -> StateFileError:
    return StateFileError(
        f"the API token file {path} {why}. Nothing was changed. Fix or remove that file "
        f"(a new token is then generated and every client needs it), or pass --token.")


def load_or_create_api_token(path: Path) -> tuple[str, bool]:
    """The API token kept in *path* (mode 0600); (token, created now).

    A missing or empty file gets a new token; an unreadable one, or one that
    is not a single printable ASCII word, raises :class:`StateFileError` and
    is left as it is.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    except OSError as e:
        raise _unusable(path, f"cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _unusable(path, "is not text (it holds non-ASCII bytes)") from None
    if token and not all(33 <= ord(c) < 127 for c in token):
        raise _unusable(path, "does not hold a single token (spaces or control characters)")
    if token:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    path.chmod(0o600)
    return token, True
