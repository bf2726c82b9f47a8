"""Input injection: the interface and a state-only stand-in.

:class:`InputInjector` is the interface the rest of the runtime agent uses;
:class:`NullInjector` only tracks state (headless tests, sessions without input).
The real one is :class:`~agent_side.xtest.XTestInjector`; the factory and the
public names are in :mod:`agent_side.injector`.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Final, Literal, TypeAlias

from wire.actions import MouseButton
from wire.errors import UnknownKeyError
from wire.keys import (
    KeyCombo,
    dom_key_to_keysym,
    keysym_from_name,
    parse_combo,
)

__all__ = [
    "BUTTON_NUMBERS",
    "SCROLL_CLICK_LIMIT",
    "TYPE_CHUNK",
    "InjectorKind",
    "InputInjector",
    "KeyLike",
    "MouseButton",
    "NullInjector",
    "combo_of",
    "resolve_keysym",
]

logger = logging.getLogger(__name__)

InjectorKind: TypeAlias = Literal["xtest", "null"]

BUTTON_NUMBERS: Final[dict[str, int]] = {"left": 1, "middle": 2, "right": 3, "back": 8, "forward": 9}
"""X pointer buttons: 8 and 9 are the side buttons browsers take for back and forward."""

SCROLL_CLICK_LIMIT: Final = 100
"""Most wheel clicks sent for one scroll call per axis; larger deltas are clamped."""
TYPE_CHUNK: Final = 64
"""Characters sent between two XSyncs while typing."""

KeyLike: TypeAlias = int | str
"""A keysym, or a DOM ``KeyboardEvent.key`` / xdotool key name."""


def resolve_keysym(key: KeyLike) -> int:
    """Keysym for an int keysym, a DOM key name or an xdotool key name."""
    if isinstance(key, int):
        return key
    try:
        return dom_key_to_keysym(key)
    except UnknownKeyError:
        return keysym_from_name(key)



class InputInjector(ABC):
    """Injects pointer and keyboard input into one screen of ``width`` x ``height``."""

    def __init__(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"bad screen size {width}x{height}")
        self._width = width
        self._height = height

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    def clamp(self, x: int, y: int) -> tuple[int, int]:
        """Clamp a point to the screen."""
        return min(max(int(x), 0), self._width - 1), min(max(int(y), 0), self._height - 1)

    @abstractmethod
    def mouse_move(self, x: int, y: int) -> None:
        """Move the pointer to absolute (x, y), clamped to the screen."""

    @abstractmethod
    def button_down(self, button: MouseButton) -> None: ...

    @abstractmethod
    def button_up(self, button: MouseButton) -> None: ...

    def click(self, button: MouseButton, count: int = 1) -> None:
        """Press and release ``button`` ``count`` times at the current position."""
        for _ in range(count):
            self.button_down(button)
            self.button_up(button)

    @abstractmethod
    def scroll(self, x: int, y: int, dx: int, dy: int) -> None:
        """Move to (x, y), then one wheel click per unit: dy > 0 down, dx > 0 right."""

    @abstractmethod
    def key_down(self, key: KeyLike) -> None:
        """Press a key (keysym or name); adds Shift when the keysym needs it."""

    @abstractmethod
    def key_up(self, key: KeyLike) -> None:
        """Release a key pressed by :meth:`key_down`, with the keycode used for the press."""

    @abstractmethod
    def type_text(self, text: str) -> None:
        """Type any printable Unicode text (``\\n`` is Return, ``\\t`` is Tab)."""

    @abstractmethod
    def key_combo(self, combo: str | KeyCombo) -> None:
        """Press the combo's keys in order, then release them in reverse."""

    @abstractmethod
    def hold_key(self, combo: str | KeyCombo, duration: float) -> None:
        """Hold the combo's keys for ``duration`` seconds."""

    @abstractmethod
    def set_clipboard(self, text: str) -> None:
        """Own the CLIPBOARD and PRIMARY selections with ``text``."""

    @abstractmethod
    def release_all(self) -> None:
        """Release every pressed key and mouse button."""

    @abstractmethod
    def release_stale(self, max_age_s: float) -> int:
        """Release keys held longer than ``max_age_s``; return how many."""

    @abstractmethod
    def cursor_position(self) -> tuple[int, int]: ...

    @abstractmethod
    def close(self) -> None:
        """Release everything and free resources; idempotent."""

    def __enter__(self) -> InputInjector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def combo_of(combo: str | KeyCombo) -> KeyCombo:
    return combo if isinstance(combo, KeyCombo) else parse_combo(combo)


class NullInjector(InputInjector):
    """Injector that injects nothing; it tracks pointer, keys and clipboard.

    ``calls`` records every call (name, args) so tests can use it as a fake.
    """

    def __init__(self, width: int = 1600, height: int = 900) -> None:
        super().__init__(width, height)
        self._lock = threading.Lock()
        self._cursor = (0, 0)
        self._buttons: set[str] = set()
        self._keys: dict[int, float] = {}
        self.clipboard: str | None = None
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.closed = False

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def mouse_move(self, x: int, y: int) -> None:
        with self._lock:
            self._cursor = self.clamp(x, y)
            self._record("mouse_move", *self._cursor)

    def button_down(self, button: MouseButton) -> None:
        with self._lock:
            self._buttons.add(button)
            self._record("button_down", button)

    def button_up(self, button: MouseButton) -> None:
        with self._lock:
            self._buttons.discard(button)
            self._record("button_up", button)

    def scroll(self, x: int, y: int, dx: int, dy: int) -> None:
        with self._lock:
            self._cursor = self.clamp(x, y)
            self._record("scroll", *self._cursor, dx, dy)

    def key_down(self, key: KeyLike) -> None:
        with self._lock:
            self._keys[resolve_keysym(key)] = time.monotonic()
            self._record("key_down", key)

    def key_up(self, key: KeyLike) -> None:
        with self._lock:
            self._keys.pop(resolve_keysym(key), None)
            self._record("key_up", key)

    def type_text(self, text: str) -> None:
        with self._lock:
            self._record("type_text", text)

    def key_combo(self, combo: str | KeyCombo) -> None:
        with self._lock:
            self._record("key_combo", combo_of(combo).text)

    def hold_key(self, combo: str | KeyCombo, duration: float) -> None:
        with self._lock:
            self._record("hold_key", combo_of(combo).text, duration)

    def set_clipboard(self, text: str) -> None:
        with self._lock:
            self.clipboard = text
            self._record("set_clipboard", text)

    def release_all(self) -> None:
        with self._lock:
            self._keys.clear()
            self._buttons.clear()
            self._record("release_all")

    def release_stale(self, max_age_s: float) -> int:
        with self._lock:
            now = time.monotonic()
            stale = [k for k, t in self._keys.items() if now - t > max_age_s]
            for k in stale:
                del self._keys[k]
            return len(stale)

    @property
    def pressed_buttons(self) -> frozenset[str]:
        return frozenset(self._buttons)

    @property
    def pressed_keysyms(self) -> frozenset[int]:
        return frozenset(self._keys)

    def cursor_position(self) -> tuple[int, int]:
        return self._cursor

    def close(self) -> None:
        with self._lock:
            self._keys.clear()
            self._buttons.clear()
            self.closed = True
