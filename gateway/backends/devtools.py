"""Where a pod's Chromium DevTools lives: a pipe, relayed to a unix socket.

Chromium is started by ``container/cdp-relay.py`` with
``--remote-debugging-pipe``, so DevTools listens on no TCP port, in no
network namespace. The relay runs beside Chromium as the session user and
listens on ``POD_SOCKET`` in a host folder (``<runtime>/<sid>/cdp``) that is
bound into the app sandbox and into the runtime agent's sandbox, and nowhere
else:

* the folder belongs to the session user with the runtime agent's group,
  mode ``2750`` (setgid), so the socket the relay makes is group-owned by the
  agent; the relay makes it ``0660``;
* the relay accepts a connection only from the runtime agent's uid
  (``SO_PEERCRED``), one at a time.

The runtime agent proxies that socket as ``GET /cdp`` on its own API socket
(``agent_side/cdp.py``), which the gateway exposes as
``/api/visual-sessions/{id}/cdp``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

__all__ = ["POD_DIR", "POD_SOCKET", "RELAY_IN_POD", "prepare_cdp_dir", "relay_command",
           "relay_script"]

POD_DIR = "/run/vr-cdp"
"""The shared folder as both sandboxes see it."""
POD_SOCKET = f"{POD_DIR}/cdp.sock"
"""The relay's socket as both sandboxes see it."""
RELAY_IN_POD = "/opt/visual-runtime/cdp-relay.py"
"""Where the relay script is inside the app sandbox (bound) or the image (copied)."""


def relay_script() -> Path:
    """``container/cdp-relay.py`` of this checkout."""
    return Path(__file__).resolve().parents[2] / "container" / "cdp-relay.py"


def host_cdp_dir(runtime_dir: Path) -> Path:
    """The shared folder on the host."""
    return runtime_dir / "cdp"


def prepare_cdp_dir(runtime_dir: Path, uid_app: int, uid_agent: int) -> Path:
    """Create the shared folder: the session user's, the agent's group, setgid."""
    path = host_cdp_dir(runtime_dir)
    path.mkdir(exist_ok=True)
    os.chown(path, uid_app, uid_agent)
    path.chmod(0o2750)
    return path


def relay_command(uid_agent: int, chromium: str = "chromium") -> str:
    """The shell words that start Chromium under the relay (flags and URL follow)."""
    return " ".join(shlex.quote(w) for w in (
        "/usr/bin/python3", RELAY_IN_POD, "--socket", POD_SOCKET,
        "--peer-uid", str(uid_agent), "--", chromium, "--remote-debugging-pipe"))
