"""Computer-use dialects: other vendors' action shapes, translated to canonical actions.

A *dialect* is the action format of one agent tool, accepted as that tool sends
it. Translation is pure: a request body in, a list of :class:`Step` out, each a
canonical action (the ``{"action": ...}`` objects :mod:`wire.actions` validates)
still in the agent's coordinates. The gateway then maps coordinates to the
screen (:mod:`wire.scaling`), validates every step and only then executes them
in order, so a bad body changes nothing.

* :mod:`wire.dialects.anthropic` — ``computer_20241022``, ``computer_20250124``,
  ``computer_20251124`` inputs and ``computer_toolset_20260801`` member calls;
* :mod:`wire.dialects.openai` — ``computer_use_preview`` and the GA ``computer``
  tool's action objects, single or batched.

Errors are :class:`~wire.errors.ActionError` naming the body's own field
(``"scroll_y"``, ``"actions[2].x"``), never a canonical one the caller did not send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Step"]


@dataclass(frozen=True)
class Step:
    """One canonical action produced from a dialect body."""

    action: dict[str, Any]
    """The canonical action, in the agent's coordinates."""
    index: int = 0
    """Position of the dialect action it came from (a batch may expand one into several)."""
    prefix: str = ""
    """Prefix for error fields of this step (``"actions[2]."`` in a batch)."""
    note: dict[str, Any] = field(default_factory=dict)
    """What the dialect asked for, for events and logs (e.g. the requested scroll pixels)."""
