"""The remote link between the gateway and a runtime agent on another machine.

On one machine the gateway reaches each runtime agent over a unix socket that
only the two of them can open (:mod:`wire.agent_api`). When the agent runs on
another node (the ``swarm`` backend) the same routes are served over TCP on
the node, and two things replace the socket's file permissions:

* **TLS.** The gateway makes a key and a self-signed certificate per session
  and gives both to the agent alone; the gateway then trusts exactly that
  certificate (it is pinned, so no certificate authority is involved). The
  certificate names :data:`TLS_SERVER_NAME`.
* **A per-session secret.** Every request carries
  ``Authorization: Bearer <secret>`` (:func:`bearer`); the agent answers
  anything else with 401 :data:`UNAUTHORIZED_ERROR` and serves nothing.

Both travel as files the agent reads at start (the swarm backend mounts them
as Swarm secrets readable only by the agent's uid) and never on a command line
or in the environment.

The link also carries what must survive the node: the recording and the
session's logs. The agent lists and serves the files of a few named folders
(:data:`MIRROR_KINDS`) from any byte offset, so the gateway copies them while
the session runs and keeps everything up to the last poll when the node dies.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "AUTHORIZATION", "AUTH_SCHEME", "FILES", "FILE_SIZE_HEADER", "ICE_ADDRESSES_HEADER",
    "MIRROR", "MIRROR_KINDS",
    "MIRROR_OFFSET", "TLS_SERVER_NAME", "UNAUTHORIZED_ERROR", "bearer", "mirror_file",
    "mirror_list", "valid_mirror_name",
]

AUTHORIZATION: Final = "Authorization"
"""Header with the session's secret on every request over TCP."""
AUTH_SCHEME: Final = "Bearer"
UNAUTHORIZED_ERROR: Final = "unauthorized"
"""``error`` of the agent's 401 answer to a request without the session's secret."""
TLS_SERVER_NAME: Final = "vr-agent"
"""The DNS name in every runtime agent's per-session certificate."""
ICE_ADDRESSES_HEADER: Final = "X-VR-ICE-Addresses"
"""Sent by the gateway on every link request when the node has configured reachable
addresses (comma-separated): the agent then offers only those as ICE host candidates."""

MIRROR: Final = "/mirror"
"""GET ``/mirror/{kind}``: ``[{"name": str, "size": int}]`` of the folder's files;
GET ``/mirror/{kind}/{name}?offset=N``: the file's bytes from offset N (0 if absent)."""
MIRROR_KINDS: Final = ("recording", "logs")
"""Folders the agent may serve: the recording and the session's log files."""
MIRROR_OFFSET: Final = "offset"

FILES: Final = "/files"
"""The session's shared folder in a swarm pod: GET ``/files`` (``{"files": [...]}``), GET
and PUT ``/files/{path}``; served by the session user in the app sandbox
(``agent_side.files_server``) and passed on by the agent (``agent_side.files_link``).
Errors: ``{"error", "detail"}`` with 400 (a bad path, a symlink on the way), 404, 416
(with ``size``), 507 (the pod's disk is full), 503 (the folder's server is not up)."""
FILE_SIZE_HEADER: Final = "X-VR-File-Size"
"""The whole file's size on every download answer (also a partial one)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def bearer(secret: str) -> str:
    """The :data:`AUTHORIZATION` header value for *secret*."""
    return f"{AUTH_SCHEME} {secret}"


def mirror_list(kind: str) -> str:
    return f"{MIRROR}/{kind}"


def mirror_file(kind: str, name: str) -> str:
    return f"{MIRROR}/{kind}/{name}"


def valid_mirror_name(name: str) -> bool:
    """A plain file name (no folders, no leading dot): the only names mirrored."""
    return bool(_NAME.match(name)) and ".." not in name
