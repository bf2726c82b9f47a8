"""Copies a remote session's recording and logs to the gateway while it runs.

The ``swarm`` backend's runtime agents live on other nodes, and a node can die
at any moment. Each live pod gets one :class:`Mirror`, which polls the agent
over the link (:mod:`wire.remote`) about once a second: small files (the
recording's state JSON) are fetched whole when they change, large ones (the
fragmented MP4, the logs) from the byte offset the gateway already has. When the
node dies, everything up to the last poll is on the gateway's disk.

Only the file names the pod writes are accepted (:data:`MIRRORED`), so an agent
cannot place anything else in the session's folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from wire import remote

from .remote import AgentEndpoint, client_ssl_context

logger = logging.getLogger(__name__)

__all__ = ["MIRRORED", "Mirror"]

MIRRORED: dict[str, frozenset[str]] = {
    "recording": frozenset({"recording.mp4", "recording.json"}),
    "logs": frozenset({"app.log", "agent.log"}),
}
"""Kind -> the file names accepted from the agent."""
WHOLE_BELOW = 64 * 1024
"""Files smaller than this are fetched whole (they may be rewritten in place)."""


class Mirror:
    """Keeps ``folders[kind]`` on the gateway equal to the agent's files of that kind."""

    def __init__(self, session_id: str, endpoint: AgentEndpoint, folders: dict[str, Path],
                 interval_s: float = 1.0) -> None:
        self.session_id = session_id
        self._endpoint = endpoint
        self._folders = folders
        self._interval = interval_s
        self._ssl = client_ssl_context(endpoint.cert_pem) if endpoint.cert_pem else None
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.last_ok = time.monotonic()
        """Monotonic time of the last successful poll (start time before the first)."""
        self.ever_ok = False
        """True once a poll succeeded (silence counts only after that)."""
        self.bytes_copied = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False)
            self._http = aiohttp.ClientSession(
                connector=connector, headers=self._endpoint.headers,
                timeout=aiohttp.ClientTimeout(total=10, connect=3))
        return self._http

    async def _get(self, path: str, **params: Any) -> bytes:
        options: dict[str, Any] = ({"server_hostname": remote.TLS_SERVER_NAME}
                                   if self._ssl is not None else {})
        async with self._client().get(self._endpoint.base_url + path, params=params or None,
                                      **options) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                  message=body[:200].decode(errors="replace"))
            return body

    async def sync(self) -> None:
        """One pass over every folder; raises when the agent cannot be reached."""
        for kind, folder in self._folders.items():
            listing = json.loads(await self._get(remote.mirror_list(kind)))
            for entry in listing if isinstance(listing, list) else []:
                name, size = entry.get("name"), entry.get("size")
                if name not in MIRRORED.get(kind, ()) or not isinstance(size, int):
                    continue
                await self._copy(kind, folder / name, name, size)
        self.last_ok = time.monotonic()
        self.ever_ok = True

    async def _copy(self, kind: str, local: Path, name: str, size: int) -> None:
        path = remote.mirror_file(kind, name)
        if size < WHOLE_BELOW:
            data = await self._get(path)
            if await asyncio.to_thread(_replace, local, data):
                self.bytes_copied += len(data)
            return
        have = local.stat().st_size if local.exists() else 0
        if have > size:  # the file was replaced: start again
            local.unlink()
            have = 0
        while have < size:
            chunk = await self._get(path, **{remote.MIRROR_OFFSET: str(have)})
            if not chunk:
                break
            await asyncio.to_thread(_append, local, chunk)
            have += len(chunk)
            self.bytes_copied += len(chunk)

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                logger.debug("session %s: mirror poll failed: %s", self.session_id, e)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"mirror-{self.session_id}")

    async def final_sync(self, timeout: float = 10.0) -> bool:
        """One last pass before the pod goes (True when it completed)."""
        try:
            async with asyncio.timeout(timeout):
                await self.sync()
            return True
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            logger.info("session %s: last mirror pass failed (%s); the gateway keeps what it "
                        "copied until %.1f s ago", self.session_id, e,
                        time.monotonic() - self.last_ok)
            return False

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None


def _replace(local: Path, data: bytes) -> bool:
    """Write *data* to *local* atomically unless it is already there."""
    if local.exists() and local.read_bytes() == data:
        return False
    tmp = local.with_name(f".{local.name}.mirror")
    tmp.write_bytes(data)
    os.replace(tmp, local)
    return True


def _append(local: Path, data: bytes) -> None:
    with open(local, "ab") as f:
        f.write(data)
