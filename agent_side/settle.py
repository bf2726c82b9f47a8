"""Refine on settle: when the screen stops changing, one near-lossless refresh.

Frames encoded while the screen moves are lossy (CRF, capped bitrate); every
viewer and the recording keep showing the last of them until something
changes again. :class:`SettleTracker` remembers which part of the picture was
encoded at motion quality since the last refinement (the *dirty* region) and
when the screen last changed; once nothing changed (and nothing was encoded)
for ``delay_s`` the worker encodes a refresh of the dirty region at refine
quality (:meth:`~agent_side.encoder.VideoEncoder.encode` with ``refine=``)
and calls :meth:`SettleTracker.refined`.

Passes: the encoder's VBV cap (the bitrate a viewer can take) may not let one
frame carry the whole refinement right after a burst of motion or a keyframe,
so up to ``passes`` refinements follow each other, ``delay_s``, then 2x,
4x ... that apart (time for the cap's buffer to refill); the series ends
early with a pass the cap did not hold back (the worker reads the quantiser
the encoder reports). A keyframe is encoded at motion
quality (a near-lossless keyframe is several times larger and the VBV cap
crushes it) and counts as lossy everywhere, so refinements follow it too.
A static screen then costs nothing: nothing is dirty, nothing is due.

Contract: pure bookkeeping on the caller's clock (``now`` arguments), no
thread, no sleep; the unit tests drive it with invented times.
"""

from __future__ import annotations

from .capture import Rect

__all__ = ["SettleTracker"]


class SettleTracker:
    """Tracks motion and tells when (and where) a refinement is due."""

    def __init__(self, delay_s: float, width: int, height: int, *, passes: int = 4) -> None:
        if delay_s <= 0 or passes < 1:
            raise ValueError(f"need delay_s > 0 and passes >= 1, got {delay_s!r}, {passes!r}")
        self.delay_s = delay_s
        self.passes = passes
        self._full = Rect(0, 0, width, height)
        self._dirty: Rect | None = None
        self._last_change = -1e18
        self._last_encoded = -1e18
        self._pass = 0
        self.refinements = 0
        """Refinement frames encoded so far."""

    @property
    def dirty(self) -> Rect | None:
        """The region encoded below refine quality since the last refinement."""
        return self._dirty

    def changed(self, now: float) -> None:
        """The screen changed at *now* (damage seen); restarts the settle timer."""
        self._last_change = max(self._last_change, now)
        self._pass = 0

    def encoded_lossy(self, rect: Rect | None, now: float) -> None:
        """*rect* (None: the whole picture, e.g. a keyframe) was encoded at motion quality."""
        rect = rect or self._full
        self._dirty = rect if self._dirty is None else self._dirty.union(rect)
        self._last_encoded = max(self._last_encoded, now)
        self._pass = 0

    def settled(self, now: float) -> bool:
        """True when nothing changed for ``delay_s``."""
        return now - self._last_change >= self.delay_s

    def due_at(self) -> float | None:
        """When the next refinement is due (None: nothing to refine)."""
        if self._dirty is None:
            return None
        # Pass k waits delay * 2**k: a held-back pass means the bitrate cap's buffer is
        # empty, and the next one needs time for it to refill.
        return max(self._last_change, self._last_encoded) + self.delay_s * (1 << self._pass)

    def due(self, now: float) -> bool:
        """True when a refinement should be encoded now."""
        at = self.due_at()
        return at is not None and now >= at

    def refined(self, now: float, complete: bool) -> Rect | None:
        """A refinement was encoded at *now* (*complete*: at full refine quality):
        returns the region it covered; clears it after a complete or the last pass."""
        region = self._dirty
        self.refinements += 1
        self._pass += 1
        self._last_encoded = max(self._last_encoded, now)
        if complete or self._pass >= self.passes:
            self._dirty = None
            self._pass = 0
        return region
