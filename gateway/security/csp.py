"""Content-Security-Policy of the viewer pages.

Everything the pages load comes from the gateway itself (``'self'``; in
CSP 3 that includes ``ws:``/``wss:`` to the same host and port, which is all
the WebSocket transports use). Inline ``<script>``/``<style>`` blocks are
allowed only by their SHA-256 (the noVNC page has one of each), never by
``'unsafe-inline'``. WebRTC media arrives as a ``MediaStream`` and is not
governed by CSP.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

_INLINE = re.compile(r"<(script|style)(?![^>]*\bsrc=)[^>]*>(.*?)</\1>", re.S | re.I)


@lru_cache(maxsize=16)
def _inline_hashes_cached(path: Path, mtime_ns: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = path.read_text(encoding="utf-8")
    scripts: list[str] = []
    styles: list[str] = []
    for match in _INLINE.finditer(text):
        digest = base64.b64encode(hashlib.sha256(match.group(2).encode()).digest()).decode()
        (scripts if match.group(1).lower() == "script" else styles).append(f"'sha256-{digest}'")
    return tuple(scripts), tuple(styles)


def inline_hashes(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """CSP hash sources of the inline scripts and styles of the HTML file *path*."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return (), ()
    return _inline_hashes_cached(path, mtime)


def viewer_policy(frame_ancestors: str, page: Path | None = None) -> str:
    """The policy of a viewer page (or, without *page*, of its static files)."""
    scripts, styles = inline_hashes(page) if page is not None else ((), ())
    directives = [
        "default-src 'self'",
        "script-src " + " ".join(("'self'", *scripts)),
        "style-src " + " ".join(("'self'", *styles)),
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        f"frame-ancestors {frame_ancestors}",
    ]
    return "; ".join(directives)
