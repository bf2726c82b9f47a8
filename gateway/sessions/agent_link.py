"""The gateway's link to one session's runtime agent.

HTTP over the agent's unix socket when it runs on this machine, or over TCP
with TLS and the session's secret when it runs on another node
(:class:`~gateway.backends.remote.AgentEndpoint`, :mod:`wire.remote`). The
routes and headers are the shared contract in :mod:`wire.agent_api`; every
caller (requests, WebSocket proxies) goes through :meth:`AgentClient.open_http`
and :meth:`AgentClient.url`, so both links carry the same traffic.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from gateway.backends.remote import AgentEndpoint, client_ssl_context
from gateway.errors import GatewayError
from wire import agent_api, remote

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
    """One keep-alive connection pool to a runtime agent (unix socket or TCP+TLS)."""

    def __init__(self, endpoint: AgentEndpoint | Path, session_id: str) -> None:
        self.endpoint = (endpoint if isinstance(endpoint, AgentEndpoint)
                         else AgentEndpoint(socket=endpoint))
        self.socket_path = self.endpoint.socket
        """The unix socket (None over TCP); prefer :meth:`open_http`."""
        self._ssl = client_ssl_context(self.endpoint.cert_pem) if self.endpoint.cert_pem else None
        self._session_id = session_id
        self._http: aiohttp.ClientSession | None = None

    def url(self, path: str) -> str:
        return self.endpoint.base_url + path

    @property
    def request_options(self) -> dict[str, Any]:
        """Keyword arguments for ``request``/``ws_connect`` on :meth:`open_http`'s session
        (the pinned certificate's name)."""
        return {"server_hostname": remote.TLS_SERVER_NAME} if self._ssl is not None else {}

    def open_http(self, connect_timeout: float = 3.0) -> aiohttp.ClientSession:
        """A new client session on this link (the caller closes it); requests on it
        carry the session's secret."""
        connector: aiohttp.BaseConnector
        if self.endpoint.socket is not None:
            connector = aiohttp.UnixConnector(path=str(self.endpoint.socket))
        else:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False)
        return aiohttp.ClientSession(
            connector=connector, headers=self.endpoint.headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout),
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = self.open_http()
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
                method, self.url(path), json=json_body, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout), **self.request_options,
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
