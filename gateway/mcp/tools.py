"""The MCP tools of Visual Runtime, built on the API client (``visual_runtime_client``).

The same tools serve both ways in: streamable HTTP at ``/mcp`` on the gateway
(:mod:`gateway.mcp.http`) and stdio for desktop MCP clients
(:mod:`gateway.mcp.stdio`). Every tool is one or two API calls, so its rules
(auth, validation, control) are the API's own; an API problem becomes an MCP
tool error whose text starts with the problem's slug and status
(``human-in-control (409): ...``), so a model reads the same meaning.

Tools: ``create_session``, ``list_sessions``, ``get_session``, ``stop_session``,
``computer`` (the Anthropic computer-use action set; screenshots and zooms come
back as MCP image content at the session's agent resolution), ``viewer_link``
(a link a human opens to watch or take control) and ``wait_for_control`` (block
until a human hands control back).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from pydantic import Field

from visual_runtime_client import ApiError, ClientError, VisualRuntimeClient

__all__ = ["ClientProvider", "build_server"]

ClientProvider = Callable[[Context[Any, Any]], AbstractAsyncContextManager[tuple[VisualRuntimeClient, str]]]
"""Yields an API client and the public base URL (for links) for one tool call."""

WAIT_LIMIT_S = 3600.0

INSTRUCTIONS = """\
Visual Runtime runs disposable Linux desktops that a human can watch live and take over.
Create a session, act on it with the `computer` tool (the Anthropic computer-use actions;
coordinates are in the pixels of the screenshots it returns), and stop it when done.
Give the user `viewer_link` to watch. When an action fails with human-in-control (409),
a human is driving: call `wait_for_control`, then take a fresh screenshot."""


def _tool_error(e: ClientError) -> ToolError:
    if isinstance(e, ApiError):
        slug = str(e.problem.get("type", "error")).rstrip("/").rsplit("/", 1)[-1]
        detail = str(e.problem.get("detail") or e.problem.get("title") or "")
        errors = e.problem.get("errors") or []
        fields = "; ".join(f"{x.get('field')}: {x.get('message')}" for x in errors
                           if isinstance(x, dict))
        return ToolError(f"{slug} ({e.status}): {detail}" + (f" [{fields}]" if fields else ""))
    return ToolError(f"gateway unreachable: {e}")


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("session_id", "status", "resolution", "agent_resolution",
                                 "controller", "viewers", "created_at", "expires_at",
                                 "stop_reason", "error") if k in info}


def build_server(provide: ClientProvider) -> MCPServer:
    """An MCP server whose tools call the API through *provide*'s client."""
    mcp: MCPServer = MCPServer(name="visual-runtime", instructions=INSTRUCTIONS)

    @mcp.tool()
    async def create_session(
        ctx: Context,
        resolution: Annotated[str | None, Field(description="Screen size 'WxH', e.g. '1600x900'")] = None,
        agent_resolution: Annotated[str | None, Field(
            description="Size of the screenshots you see, e.g. '1280x720'; coordinates use it")] = None,
        start_url: Annotated[str | None, Field(description="Page the browser opens first")] = None,
        timeout_minutes: Annotated[int | None, Field(ge=1)] = None,
    ) -> str:
        """Start a new desktop session and wait until it runs. Returns its id and a viewer link."""
        options: dict[str, Any] = {
            k: v for k, v in {"resolution": resolution, "agent_resolution": agent_resolution,
                              "start_url": start_url, "timeout_minutes": timeout_minutes}.items()
            if v is not None}
        async with provide(ctx) as (client, base):
            try:
                session = await client.create_session(**options)
            except ClientError as e:
                raise _tool_error(e) from e
            info = _public(session.info)
            token = (session.tokens or {}).get("control")
            if token:
                info["viewer_url"] = f"{base}/sessions/{session.session_id}/?token={token}"
        return json.dumps(info)

    @mcp.tool()
    async def list_sessions(ctx: Context, status: Literal[
            "starting", "running", "stopping", "stopped", "expired", "failed"] | None = None) -> str:
        """List sessions (optionally only those with one status)."""
        async with provide(ctx) as (client, _):
            try:
                sessions = await client.list_sessions(status)
            except ClientError as e:
                raise _tool_error(e) from e
        return json.dumps([_public(s.info) for s in sessions])

    @mcp.tool()
    async def get_session(ctx: Context, session_id: str) -> str:
        """One session's state: status, controller, resolution and agent resolution."""
        async with provide(ctx) as (client, _):
            try:
                session = await client.get_session(session_id)
            except ClientError as e:
                raise _tool_error(e) from e
        return json.dumps(_public(session.info))

    @mcp.tool()
    async def stop_session(ctx: Context, session_id: str) -> str:
        """Stop a session; its desktop is destroyed."""
        async with provide(ctx) as (client, _):
            try:
                return json.dumps(_public(await client.stop_session(session_id)))
            except ClientError as e:
                raise _tool_error(e) from e

    @mcp.tool()
    async def computer(
        ctx: Context,
        session_id: str,
        action: Annotated[Literal[
            "screenshot", "zoom", "cursor_position", "mouse_move", "left_click", "right_click",
            "middle_click", "double_click", "triple_click", "left_click_drag", "left_mouse_down",
            "left_mouse_up", "scroll", "type", "key", "hold_key", "wait"], Field(
                description="The Anthropic computer-use action")],
        coordinate: Annotated[list[int] | None, Field(
            description="[x, y] in screenshot pixels", min_length=2, max_length=2)] = None,
        start_coordinate: Annotated[list[int] | None, Field(min_length=2, max_length=2)] = None,
        text: Annotated[str | None, Field(
            description="Text to type, key combo ('ctrl+s'), or keys held during a click")] = None,
        scroll_direction: Literal["up", "down", "left", "right"] | None = None,
        scroll_amount: Annotated[int | None, Field(ge=0, le=100)] = None,
        duration: Annotated[float | None, Field(ge=0, le=100)] = None,
        region: Annotated[list[int] | None, Field(
            description="[x0, y0, x1, y1] for zoom", min_length=4, max_length=4)] = None,
        repeat: Annotated[int | None, Field(ge=1, le=100)] = None,
    ) -> Image | str:
        """Use the session's mouse, keyboard and screen. `screenshot` and `zoom` return an image."""
        fields = {"coordinate": coordinate, "start_coordinate": start_coordinate, "text": text,
                  "scroll_direction": scroll_direction, "scroll_amount": scroll_amount,
                  "duration": duration, "region": region, "repeat": repeat}
        async with provide(ctx) as (client, _):
            try:
                result = await client.session(session_id).act(action, **fields)
            except ClientError as e:
                raise _tool_error(e) from e
        image = result.get("base64_image")
        if image:
            return Image(data=base64.b64decode(image), format="png")
        if action == "cursor_position":
            x, y = result["cursor"]
            return f"X={x},Y={y}"
        return json.dumps({k: v for k, v in result.items() if k != "base64_image"})

    @mcp.tool()
    async def viewer_link(ctx: Context, session_id: str,
                          kind: Literal["view", "control"] = "control") -> str:
        """A link a human opens in a browser to watch ('view') or also take control ('control')."""
        async with provide(ctx) as (client, base):
            try:
                minted = await client.request("POST", f"/api/visual-sessions/{session_id}/tokens",
                                              json_body={"kind": kind})
            except ClientError as e:
                raise _tool_error(e) from e
        return f"{base}{minted['viewer_url']}"

    @mcp.tool()
    async def wait_for_control(
        ctx: Context, session_id: str,
        timeout_s: Annotated[float, Field(gt=0, le=WAIT_LIMIT_S)] = 300.0,
    ) -> str:
        """Wait until a human hands control back to the agent (at once if the agent has it)."""
        async with provide(ctx) as (client, _):
            try:
                state = await client.session(session_id).wait_for_control("agent",
                                                                          timeout=timeout_s)
            except TimeoutError as e:
                raise ToolError(f"timeout: a human still holds control after {timeout_s:g} s") from e
            except ClientError as e:
                raise _tool_error(e) from e
        return json.dumps({"controller": state.controller, "since": state.since})

    return mcp


