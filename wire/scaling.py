"""Agent-size coordinates <-> screen pixels (the session field ``agent_resolution``).

A session may show its agent a smaller picture than its screen, e.g. 1280x720
of a 1600x900 desktop. Every coordinate the agent sends is in that picture's
pixels and every coordinate sent back to it must be too. Both directions map
pixel *centres*, the same correspondence an area-averaging resize uses::

    screen_x = floor((agent_x + 0.5) * screen_width / agent_width)
    agent_x  = floor((screen_x + 0.5) * agent_width / screen_width)

so the agent's first and last pixel land on the screen's first and last pixel
(no off-by-one at the edges), the centre on the centre, and a screen point read
back (``cursor_position``) maps to the agent pixel that covers it. Arithmetic is
on integers: nothing drifts with the size. Zoom regions are half-open boxes
``[x0, y0, x1, y1)``; their edges map as edges (``x * W // w``), not centres.

:class:`Scale` is pure; :func:`to_screen_action` rewrites a canonical action's
coordinates, raising :class:`~wire.errors.ActionError` naming the field when one
lies outside the agent's picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from wire.errors import ActionError

__all__ = ["MIN_AGENT_SIDE", "Scale", "parse_resolution", "to_screen_action"]

MIN_AGENT_SIDE: Final = 64
"""Smallest agent picture side we accept: below this no UI is legible."""

_POINT_FIELDS: Final = ("coordinate", "start_coordinate")


@dataclass(frozen=True)
class Scale:
    """The agent's picture size and the screen's size, both in pixels."""

    agent_width: int
    """Width of the picture the agent sees (``agent_resolution``)."""
    agent_height: int
    screen_width: int
    """Width of the session's screen (``resolution``)."""
    screen_height: int

    def __post_init__(self) -> None:
        for name in ("agent_width", "agent_height", "screen_width", "screen_height"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @classmethod
    def identity(cls, width: int, height: int) -> Scale:
        """No scaling: the agent sees the screen as it is."""
        return cls(width, height, width, height)

    @property
    def is_identity(self) -> bool:
        return (self.agent_width, self.agent_height) == (self.screen_width, self.screen_height)

    def point_to_screen(self, x: int, y: int, field: str = "coordinate") -> tuple[int, int]:
        """Screen pixel under agent pixel (x, y); ``field`` names it in the error."""
        if not (0 <= x < self.agent_width and 0 <= y < self.agent_height):
            raise ActionError(field, f"[{x}, {y}] is outside the screen (0..{self.agent_width - 1}, "
                                     f"0..{self.agent_height - 1})")
        return ((2 * x + 1) * self.screen_width // (2 * self.agent_width),
                (2 * y + 1) * self.screen_height // (2 * self.agent_height))

    def point_to_agent(self, x: int, y: int) -> tuple[int, int]:
        """Agent pixel covering screen pixel (x, y) (clamped into the picture)."""
        ax = (2 * x + 1) * self.agent_width // (2 * self.screen_width)
        ay = (2 * y + 1) * self.agent_height // (2 * self.screen_height)
        return (min(max(ax, 0), self.agent_width - 1), min(max(ay, 0), self.agent_height - 1))

    def region_to_screen(self, x0: int, y0: int, x1: int, y1: int,
                         field: str = "region") -> tuple[int, int, int, int]:
        """Screen box of the agent box ``[x0, y0, x1, y1)`` (edges map to edges)."""
        if not (0 <= x0 < x1 <= self.agent_width and 0 <= y0 < y1 <= self.agent_height):
            raise ActionError(field, f"[{x0}, {y0}, {x1}, {y1}] must satisfy 0 <= x0 < x1 <= "
                                     f"{self.agent_width} and 0 <= y0 < y1 <= {self.agent_height}")
        sx0 = x0 * self.screen_width // self.agent_width
        sy0 = y0 * self.screen_height // self.agent_height
        # ceil for the far edges, so the box never shrinks to nothing
        sx1 = -(-x1 * self.screen_width // self.agent_width)
        sy1 = -(-y1 * self.screen_height // self.agent_height)
        return sx0, sy0, sx1, sy1

    def pixels_to_screen(self, dx: int, dy: int) -> tuple[int, int]:
        """A distance in agent pixels (e.g. a scroll) as screen pixels, rounded."""
        return (round(dx * self.screen_width / self.agent_width),
                round(dy * self.screen_height / self.agent_height))


def parse_resolution(value: object, field: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720); raises :class:`ActionError` naming ``field``."""
    if not isinstance(value, str):
        raise ActionError(field, f"must be a string 'WxH', got {value!r:.60}")
    width_s, sep, height_s = value.partition("x")
    if not sep or not width_s.isdigit() or not height_s.isdigit():
        raise ActionError(field, f"must look like '1280x720', got {value!r:.60}")
    return int(width_s), int(height_s)


def _int_pair(field: str, value: object) -> tuple[int, int]:
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ActionError(field, f"must be [x, y] integers, got {value!r:.60}")
    return int(value[0]), int(value[1])


def to_screen_action(action: Mapping[str, Any], scale: Scale) -> dict[str, Any]:
    """Copy of a canonical action with every agent coordinate mapped to the screen.

    Maps ``coordinate``, ``start_coordinate``, each point of ``path`` and the
    ``region`` box; other fields are copied as they are. Raises
    :class:`ActionError` naming the first field out of the agent's picture.
    """
    out = dict(action)
    for field in _POINT_FIELDS:
        value = action.get(field)
        if value is not None:
            out[field] = list(scale.point_to_screen(*_int_pair(field, value), field=field))
    path = action.get("path")
    if path is not None:
        if not isinstance(path, list | tuple):
            raise ActionError("path", f"must be a list of [x, y] points, got {path!r:.60}")
        out["path"] = [list(scale.point_to_screen(*_int_pair(f"path[{i}]", p), field=f"path[{i}]"))
                       for i, p in enumerate(path)]
    region = action.get("region")
    if region is not None:
        if (not isinstance(region, list | tuple) or len(region) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in region)):
            raise ActionError("region", f"must be [x0, y0, x1, y1] integers, got {region!r:.60}")
        x0, y0, x1, y1 = (int(v) for v in region)
        out["region"] = list(scale.region_to_screen(x0, y0, x1, y1))
    return out
