"""Progress on stderr for long CLI operations (downloads, waiting for a session).

Two renderings, chosen once per :class:`Progress`:

* ``bar``: one line redrawn in place (``\\r``), at most every 0.1 s — when
  stderr is a terminal, or when forced (``--progress``);
* ``plain``: a line when the operation starts, when its state changes and
  when it ends; nothing in between, so CI logs and pipes stay readable.

stdout is never touched: ``--json`` output stays machine-readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "human_bytes"]

_BAR_WIDTH = 24
_SPINNER = "|/-\\"


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class Progress:
    """One operation's progress: a byte count against a total, or a state plus elapsed time."""

    def __init__(self, label: str, *, total: int | None = None, force_bar: bool = False,
                 stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.bar = enabled and (force_bar or bool(isatty and isatty()))
        self.done = 0
        self.state = ""
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0
        self._ticks = 0
        self._closed = False
        if enabled and not self.bar:
            self._line(f"{label}..." if total is None else f"{label} ({human_bytes(total)})...")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def update(self, done: int) -> None:
        """Bytes (or items) done so far."""
        self.done = done
        # The last update always draws: a complete bar, however soon after the one before.
        self._draw(force=self.total is not None and done >= self.total)

    def set_state(self, state: str) -> None:
        """A new state of a waited-for thing (printed as a line in plain mode)."""
        if state == self.state:
            self._draw()
            return
        self.state = state
        if self.enabled and not self.bar:
            self._line(f"{self.label}: {state} ({self.elapsed:.1f} s)")
        self._draw(force=True)

    def tick(self) -> None:
        """Redraw (spinner, elapsed time) without new data."""
        self._draw()

    def finish(self, message: str, *, plain: bool = True) -> None:
        """End the operation with a final line (idempotent); *plain*: also in plain mode
        (False when the last state line already said it)."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self.bar:
            self._clear()
        elif not plain:
            return
        self._line(message)

    # ----------------------------------------------------------- drawing
    def _draw(self, force: bool = False) -> None:
        if not self.bar or self._closed:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        self._ticks += 1
        text = f"{self.label} {self._body()}"
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def _body(self) -> str:
        elapsed = self.elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * _BAR_WIDTH)
            rate = self.done / elapsed if elapsed > 0 else 0.0
            return (f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {frac * 100:5.1f}% "
                    f"{human_bytes(self.done)}/{human_bytes(self.total)} "
                    f"{human_bytes(rate)}/s")
        if self.done:
            return f"{_SPINNER[self._ticks % 4]} {human_bytes(self.done)} {elapsed:.1f} s"
        state = f"{self.state} " if self.state else ""
        return f"{_SPINNER[self._ticks % 4]} {state}{elapsed:.1f} s"

    def _clear(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
