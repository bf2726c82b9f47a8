"""The gateway's link to one session's runtime agent: HTTP over its unix socket.

The routes and headers are the shared contract in :mod:`wire.agent_api`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from gateway.errors import GatewayError
from wire import agent_api

logger = logging.getLogger(__name__)


class AgentUnavailable(GatewayError):
    """The runtime agent could not be reached or gave a malformed answer."""


class AgentReply:
    """Status, headers and body of one runtime agent answer."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AgentUnavailable(f"runtime agent sent malformed JSON: {e}") from e


class AgentClient:
    """One keep-alive connection pool to a runtime agent's unix socket."""

    def __init__(self, socket_path: Path, session_id: str) -> None:
        self.socket_path = socket_path
        self._session_id = session_id
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                timeout=aiohttp.ClientTimeout(total=None, connect=3),
            )
        return self._http

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> AgentReply:
        try:
            async with self._session().request(
                method, "http://agent" + path, json=json_body, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                body = await resp.read()
                return AgentReply(resp.status, dict(resp.headers), body)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise AgentUnavailable(f"runtime agent unreachable: {e}") from e

    async def health(self) -> bool:
        reply = await self.request("GET", agent_api.HEALTH, timeout=2)
        return reply.status == 200 and bool(reply.json().get("first_frame"))

    async def stats(self) -> dict[str, Any]:
        reply = await self.request("GET", agent_api.STATS, timeout=3)
        if reply.status != 200:
            raise AgentUnavailable(f"runtime agent /stats answered {reply.status}")
        data = reply.json()
        if not isinstance(data, dict):
            raise AgentUnavailable("runtime agent /stats is not an object")
        return data

    async def set_controller(self, controller: str, owner: str | None) -> None:
        reply = await self.request("POST", agent_api.CONTROL,
                                   json_body={"controller": controller, "owner": owner})
        if reply.status != 200:
            raise AgentUnavailable(f"runtime agent refused the control change ({reply.status})")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
