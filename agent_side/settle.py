"""Refine on settle: when the screen stops changing, one near-lossless refresh.

Frames encoded while the screen moves are lossy (CRF, capped bitrate); every
viewer and the recording keep showing the last of them until something
changes again. :class:`SettleTracker` remembers which part of the picture was
encoded at motion quality since the last refinement (the *dirty* region) and
when the screen last changed; once nothing changed for ``delay_s`` the worker
encodes one refresh of the dirty region at refine quality
(:meth:`~agent_side.encoder.VideoEncoder.encode` with ``refine=``) and calls
:meth:`SettleTracker.refined`. A static screen then costs nothing: nothing is
dirty, nothing is due.

Contract: pure bookkeeping on the caller's clock (``now`` arguments), no
thread, no sleep; the unit tests drive it with invented times.
"""

from __future__ import annotations

from .capture import Rect

__all__ = ["SettleTracker"]


class SettleTracker:
    """Tracks motion and tells when (and where) a refinement is due."""

    def __init__(self, delay_s: float, width: int, height: int) -> None:
        if delay_s <= 0:
            raise ValueError(f"delay_s must be > 0, got {delay_s!r}")
        self.delay_s = delay_s
        self._full = Rect(0, 0, width, height)
        self._dirty: Rect | None = None
        self._last_change = -1e18
        self.refinements = 0
        """Refinements done so far."""

    @property
    def dirty(self) -> Rect | None:
        """The region encoded below refine quality since the last refinement."""
        return self._dirty

    def changed(self, now: float) -> None:
        """The screen changed at *now* (damage seen); restarts the settle timer."""
        self._last_change = max(self._last_change, now)

    def encoded_lossy(self, rect: Rect | None) -> None:
        """*rect* (None: the whole picture, e.g. a keyframe) was encoded at motion quality."""
        rect = rect or self._full
        self._dirty = rect if self._dirty is None else self._dirty.union(rect)

    def settled(self, now: float) -> bool:
        """True when nothing changed for ``delay_s``: frames now get refine quality."""
        return now - self._last_change >= self.delay_s

    def due_at(self) -> float | None:
        """When the next refinement is due (None: nothing to refine)."""
        if self._dirty is None:
            return None
        return self._last_change + self.delay_s

    def due(self, now: float) -> bool:
        """True when a refinement should be encoded now."""
        at = self.due_at()
        return at is not None and now >= at

    def refined(self) -> Rect | None:
        """A refinement was encoded: returns the region it covered, clears it."""
        dirty, self._dirty = self._dirty, None
        self.refinements += 1
        return dirty
