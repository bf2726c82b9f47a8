"""Agent actions and screenshots: ``POST .../actions``, ``.../actions/openai``, ``GET .../screenshot``.

One pipeline for every dialect (docs/api-extensions.md, "Computer-use dialects"):

1. the body is translated to canonical actions (:mod:`wire.dialects`);
2. each is mapped from the agent's picture to the screen (:mod:`wire.scaling`,
   the session's ``agent_resolution``) and validated against the screen
   (:func:`wire.actions.validate_action`) — all of them before any runs, so a
   bad body is a 422 naming its own field and nothing reaches X;
3. they run in order, stopping at the first failure; a batch's problem carries
   the failing action's ``index`` and how many ran (``completed``).

``screenshot`` and ``zoom`` are served here from the runtime agent's full-size
screenshot (:mod:`gateway.media.imaging`); every other action goes to the agent
(which starts a drag without ``start_coordinate`` where the pointer is).
Coordinates in results (``cursor``) are mapped back to the agent's picture.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from aiohttp import web

from gateway.appkeys import AUTH, MANAGER
from gateway.errors import FieldError, ProblemError, ValidationProblem, conflict
from gateway.http.schemas import read_json_object
from gateway.media.imaging import ImagingError, crop_and_resize, fit_within, resize_png
from gateway.sessions.agent_link import AgentUnavailable
from gateway.sessions.manager import SessionManager
from gateway.sessions.session import Controller, Session, rfc3339
from wire import agent_api
from wire.actions import validate_action
from wire.dialects import Step, anthropic, openai
from wire.errors import ActionError
from wire.scaling import Scale, to_screen_action

__all__ = ["scale_of", "setup_routes"]

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EVENT_FIELDS = ("coordinate", "start_coordinate", "scroll_direction", "scroll_amount", "duration",
                 "region")


def scale_of(session: Session) -> Scale:
    """Agent picture -> screen mapping of *session* (identity without ``agent_resolution``)."""
    width, height = session.spec.resolution
    agent = session.spec.agent_resolution or session.spec.resolution
    return Scale(agent[0], agent[1], width, height)


def _unavailable(session: Session, e: AgentUnavailable) -> ProblemError:
    logger.warning("session %s: runtime agent unavailable: %s", session.session_id, e)
    return ProblemError(502, "runtime-agent-unavailable", "Runtime agent unavailable",
                        "the session's runtime agent did not answer; try again")


def _human_in_control(session: Session) -> ProblemError:
    return conflict("human-in-control",
                    f"a human holds control of session {session.session_id} since "
                    f"{rfc3339(session.controller_since)}; wait for a 'control' event",
                    "Human in control")


def _openai_field(step: Step, field: str) -> str:
    """The OpenAI body's name for a canonical field of *step*."""
    name = step.action["action"]
    if field == "text":
        field = "text" if name == "type" else "keys"
    elif field in ("coordinate", "start_coordinate") or field.startswith("path"):
        field = "path" if name == "left_click_drag" else "x"
    return step.prefix + field


class _Run:
    """The validated steps of one request, executed against one session."""

    def __init__(self, manager: SessionManager, session: Session, steps: list[Step],
                 dialect: str) -> None:
        self.manager = manager
        self.session = session
        self.scale = scale_of(session)
        self.dialect = dialect
        self.steps = steps
        self.screen: list[dict[str, Any]] = []
        width, height = session.spec.resolution
        for step in steps:
            try:
                action = to_screen_action(step.action, self.scale)
                validate_action(action, width, height)
            except ActionError as e:
                field = _openai_field(step, e.field) if dialect == "openai" else e.field
                raise ValidationProblem([FieldError(field, e.message)]) from e
            self.screen.append(action)

    async def execute(self) -> list[dict[str, Any]]:
        """Run every step in order; results of the steps, cursors in agent pixels."""
        results = []
        for i, (step, action) in enumerate(zip(self.steps, self.screen, strict=True)):
            try:
                results.append(await self._one(step, action))
            except ProblemError as e:
                if len(self.steps) > 1 or self.dialect == "openai":
                    done = len({s.index for s in self.steps[:i]} - {step.index})
                    e.extra.update(index=step.index, completed=done)
                raise
        return results

    async def _one(self, step: Step, action: dict[str, Any]) -> dict[str, Any]:
        session, manager = self.session, self.manager
        manager.agent(session)  # 409 unless the session runs
        if session.controller is Controller.HUMAN:
            raise _human_in_control(session)
        manager.note_action(session)
        name = action["action"]
        if name in ("screenshot", "zoom"):
            png = await screenshot(manager, session, region=action.get("region"),
                                   zoom_size=self._zoom_size(step))
            result: dict[str, Any] = {"ok": True,
                                      "base64_image": base64.b64encode(png).decode("ascii")}
        else:
            result = await self._agent_action(action)
        if "cursor" in result:
            result["cursor"] = list(self.scale.point_to_agent(*result["cursor"]))
        manager.events.emit(session.session_id, "action", action=name,
                            **{k: v for k, v in action.items() if k in _EVENT_FIELDS})
        return result

    def _zoom_size(self, step: Step) -> tuple[int, int] | None:
        """A zoom fills the agent's picture with the region as the agent saw it."""
        if step.action["action"] != "zoom":
            return None
        x0, y0, x1, y1 = step.action["region"]
        return fit_within(x1 - x0, y1 - y0, self.scale.agent_width, self.scale.agent_height)

    async def _agent_action(self, action: dict[str, Any]) -> dict[str, Any]:
        session = self.session
        agent = self.manager.agent(session)
        timeout = (15.0 + float(action.get("duration", 0) or 0)
                   + len(str(action.get("text", ""))) * 0.05 * int(action.get("repeat", 1) or 1))
        try:
            reply = await agent.request("POST", agent_api.ACTIONS, json_body=action,
                                        timeout=timeout)
            data = reply.json()
        except AgentUnavailable as e:
            raise _unavailable(session, e) from e
        if reply.status == 409:
            raise _human_in_control(session)
        if reply.status == 422:
            raise ValidationProblem([FieldError(str(data.get("field", "action")),
                                                str(data.get("detail", "invalid")))])
        if reply.status != 200 or not isinstance(data, dict):
            raise ProblemError(500, "action-failed", "Action failed",
                               str(data.get("detail", "the action could not be carried out"))
                               if isinstance(data, dict) else "the action could not be carried out")
        return data


async def screenshot(manager: SessionManager, session: Session, *, full: bool = False,
                     region: list[int] | None = None,
                     zoom_size: tuple[int, int] | None = None) -> bytes:
    """PNG of the screen at the agent's size (``full``: the screen's), or a zoomed region.

    ``region`` is a screen box (already mapped), scaled to ``zoom_size``: the
    agent's region enlarged, keeping the aspect it has in the agent's picture,
    to fill the agent's picture (``zoom`` of computer_20251124: "scaled up to
    fill the image budget").
    """
    agent = manager.agent(session)
    try:
        reply = await agent.request("GET", agent_api.SCREENSHOT)
    except AgentUnavailable as e:
        raise _unavailable(session, e) from e
    if reply.status != 200 or not reply.body.startswith(PNG_SIGNATURE):
        # e.g. the X server died under the agent: never pass its error page off as a PNG.
        logger.warning("session %s: screenshot failed (agent status %s)", session.session_id,
                       reply.status)
        raise ProblemError(502, "screenshot-failed", "Screenshot failed",
                           "the session's runtime agent could not take a screenshot; try again",
                           headers={"Retry-After": "1"})
    scale = scale_of(session)
    try:
        if region is not None and zoom_size is not None:
            x0, y0, x1, y1 = region
            return await asyncio.to_thread(crop_and_resize, reply.body, (x0, y0, x1, y1),
                                           *zoom_size)
        if full or scale.is_identity:
            return reply.body
        return await asyncio.to_thread(resize_png, reply.body, scale.agent_width,
                                       scale.agent_height)
    except ImagingError as e:
        logger.warning("session %s: screenshot unusable: %s", session.session_id, e)
        raise ProblemError(502, "screenshot-failed", "Screenshot failed",
                           "the session's screenshot could not be scaled; try again",
                           headers={"Retry-After": "1"}) from e


async def _read(request: web.Request) -> tuple[SessionManager, Session, dict[str, Any]]:
    request.app[AUTH].api(request)
    manager = request.app[MANAGER]
    session = manager.get(request.match_info["session_id"])
    return manager, session, await read_json_object(request)


async def post_action(request: web.Request) -> web.Response:
    """One Anthropic computer-use call: a tool input or a toolset member call."""
    manager, session, body = await _read(request)
    try:
        steps = anthropic.translate(body)
    except ActionError as e:
        raise ValidationProblem([FieldError(e.field, e.message)]) from e
    results = await _Run(manager, session, steps, "anthropic").execute()
    return web.json_response(results[-1])


async def post_openai_actions(request: web.Request) -> web.Response:
    """One OpenAI computer call (an action, a batch or a ``computer_call`` item).

    Answers what a ``computer_call_output`` needs: a screenshot taken after the
    last action, as ``output``.
    """
    manager, session, body = await _read(request)
    try:
        steps = openai.translate(body, scale_of(session))
    except ActionError as e:
        raise ValidationProblem([FieldError(e.field, e.message)]) from e
    results = await _Run(manager, session, steps, "openai").execute()
    png = await screenshot(manager, session)
    cursor = next((r["cursor"] for r in reversed(results) if "cursor" in r), None)
    return web.json_response({
        "ok": True,
        "actions": len({s.index for s in steps}),
        "cursor": cursor,
        "output": {"type": "computer_screenshot",
                   "image_url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")},
    })


async def get_screenshot(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    session = manager.get(request.match_info["session_id"])
    request.app[AUTH].session(request, session)
    size = request.query.get("size", "agent")
    if size not in ("agent", "full"):
        raise ValidationProblem([FieldError("size", f"must be 'agent' or 'full', got {size!r:.40}")])
    png = await screenshot(manager, session, full=size == "full")
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})


def setup_routes(app: web.Application) -> None:
    base = "/api/visual-sessions/{session_id}"
    app.router.add_post(base + "/actions", post_action)
    app.router.add_post(base + "/actions/openai", post_openai_actions)
    app.router.add_get(base + "/screenshot", get_screenshot)
