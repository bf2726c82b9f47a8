"""Who may inject input right now: the single input owner of a session.

The gateway is the source of truth for control and pushes every change here;
this gate enforces it at the last moment, in the one input thread:

* agent actions run only while the controller is ``agent``;
* human input runs only while the controller is ``human`` AND comes from a
  peer whose token is the one that took control.

The gate's lock is held while an input operation is injected and while
control changes, so once :meth:`InputGate.set_controller` has returned no
agent input reaches the display (the gateway answers a ``take`` only after
that call). Long agent actions are split into steps that each re-check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from .errors import AgentSideError
from .injector import InputInjector

logger = logging.getLogger(__name__)

Controller = Literal["agent", "human"]
T = TypeVar("T")


class NotInControl(AgentSideError):
    """The caller does not hold control of the session."""

    def __init__(self, controller: Controller, detail: str) -> None:
        super().__init__(detail)
        self.controller = controller


class InputGate:
    """Serialises all injection through one worker thread under the control rules."""

    def __init__(self, injector: InputInjector, session_id: str = "") -> None:
        self.injector = injector
        self._session_id = session_id
        self._lock = threading.Lock()
        self._controller: Controller = "agent"
        self._owner: str | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="input")
        self.last_input = time.monotonic()
        """Monotonic time of the last applied input (agent or human), for idle tracking."""
        self.applied = 0
        self.refused = 0

    @property
    def controller(self) -> Controller:
        return self._controller

    @property
    def owner(self) -> str | None:
        return self._owner

    async def set_controller(self, controller: Controller, owner: str | None) -> None:
        """Change control; returns once no input of the old owner can still be injected."""
        def change() -> None:
            with self._lock:
                changed = controller != self._controller or owner != self._owner
                self._controller = controller
                self._owner = owner if controller == "human" else None
                if changed:
                    self.injector.release_all()
        await asyncio.get_running_loop().run_in_executor(None, change)
        logger.info("session %s: controller is %s", self._session_id, controller)

    async def run_agent(self, step: Callable[[], T]) -> T:
        """Run one agent input step in the input thread if the agent holds control."""
        return await self._run(step, lambda: self._controller == "agent",
                               "a human holds control of this session")

    async def run_human(self, token_id: str, step: Callable[[], T]) -> T:
        """Run one human input step if *token_id* is the token that took control."""
        return await self._run(
            step,
            lambda: self._controller == "human" and self._owner == token_id,
            "this viewer does not hold control",
        )

    async def run_any(self, step: Callable[[], T]) -> T:
        """Run a step that injects nothing (cursor position, release) in the input thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, step)

    async def _run(self, step: Callable[[], T], allowed: Callable[[], bool], why: str) -> T:
        def guarded() -> T:
            with self._lock:
                if not allowed():
                    self.refused += 1
                    raise NotInControl(self._controller, why)
                result = step()
                self.applied += 1
                self.last_input = time.monotonic()
                return result
        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded)

    async def release_for(self, token_id: str) -> None:
        """A peer went away: release what it may have left pressed."""
        def release() -> None:
            with self._lock:
                if self._owner == token_id:
                    self.injector.release_all()
        await asyncio.get_running_loop().run_in_executor(self._executor, release)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.injector.close)
        self._executor.shutdown(wait=True)
