"""Input injection into a real X display through the XTEST extension.

:class:`XTestInjector` implements :class:`~agent_side.injector.InputInjector`.
All methods are synchronous and meant for one worker thread; each instance also
holds a lock so a stray call from another thread (e.g. ``release_all`` on
disconnect) cannot interleave with a half-sent key sequence. Methods flush and
XSync, so the server has the event when they return.

Self-healing (STYLE.md rule 19): a key is released with the keycode that was
used to press it, whatever name the release names; :meth:`release_all`
releases every key and button the server reports down; :meth:`release_stale`
sweeps keys held for too long. Keysyms missing from the keyboard map are bound
to spare keycodes by :class:`~agent_side.xkeymap.KeyboardMap`; the clipboard is
:class:`~agent_side.clipboard.SelectionOwner`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from Xlib import X
from Xlib import error as xerror
from Xlib.ext import xtest

from wire.actions import MouseButton
from wire.errors import UnknownKeyError
from wire.keys import KeyCombo, char_to_keysym, is_modifier, keysym_name, keysym_to_char

from .clipboard import SelectionOwner
from .errors import InjectorError
from .injection import (
    BUTTON_NUMBERS,
    SCROLL_CLICK_LIMIT,
    TYPE_CHUNK,
    InputInjector,
    KeyLike,
    combo_of,
    resolve_keysym,
)
from .xconnect import XConnectError, open_xlib
from .xkeymap import KeyboardMap

__all__ = ["XTestInjector"]

logger = logging.getLogger(__name__)

_SCROLL_UP, _SCROLL_DOWN, _SCROLL_LEFT, _SCROLL_RIGHT = 4, 5, 6, 7


@dataclass(frozen=True)
class _PressedKey:
    """A key we hold down, remembered so its release uses the same keycode."""

    keycode: int
    keysym: int
    added_shift: bool
    """We pressed Shift for it (a shifted character) and release Shift with it."""
    since: float


class XTestInjector(InputInjector):
    """Injects input into X display ``display`` (e.g. ``":12"``) through XTEST."""

    def __init__(self, display: str, width: int, height: int) -> None:
        super().__init__(width, height)
        self._display_name = display
        self._lock = threading.RLock()
        self._closed = False
        try:
            self._d = open_xlib(display)
        except (xerror.DisplayError, xerror.ConnectionClosedError, OSError, XConnectError) as e:
            raise InjectorError(f"cannot open X display {display!r}") from e
        if not self._d.has_extension("XTEST"):
            self._d.close()
            raise InjectorError(f"X display {display!r} lacks the XTEST extension")
        self._root = self._d.screen().root
        self._pressed: dict[int, _PressedKey] = {}  # keycode -> press record
        self._buttons: set[int] = set()
        self._kmap = KeyboardMap(self._d, display, self._sync)
        self._clipboard: SelectionOwner | None = None

    # -- keymap ---------------------------------------------------------


    # -- low level --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InjectorError("injector is closed")

    def _sync(self) -> None:
        try:
            self._d.sync()
        except (xerror.ConnectionClosedError, OSError) as e:
            raise InjectorError(f"lost X display {self._display_name!r}") from e

    def _fake(self, event_type: int, detail: int = 0, x: int = 0, y: int = 0) -> None:
        xtest.fake_input(self._d, event_type, detail, root=self._root, x=x, y=y)

    @contextmanager
    def _op(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            try:
                yield
            except (xerror.ConnectionClosedError, OSError) as e:
                raise InjectorError(f"lost X display {self._display_name!r}") from e
            self._sync()

    def _press_keycode(self, keycode: int) -> None:
        self._fake(X.KeyPress, keycode)
        self._kmap.note_use(keycode)

    def _release_keycode(self, keycode: int) -> None:
        self._fake(X.KeyRelease, keycode)
        self._kmap.note_use(keycode)

    def _shift_held(self) -> bool:
        return self._kmap.shift_keycode in self._pressed

    def _press_keysym(self, keysym: int) -> _PressedKey | None:
        keycode, needs_shift = self._kmap.keycode_for(keysym, self._pressed.keys())
        if keycode in self._pressed:
            return None  # already down: a repeat would need a release first
        added_shift = needs_shift and not self._shift_held()
        if added_shift:
            self._press_keycode(self._kmap.shift_keycode)
        self._press_keycode(keycode)
        record = _PressedKey(keycode, keysym, added_shift, time.monotonic())
        self._pressed[keycode] = record
        return record

    def _release_record(self, record: _PressedKey) -> None:
        if self._pressed.get(record.keycode) is not record:
            return
        del self._pressed[record.keycode]
        self._release_keycode(record.keycode)
        if record.added_shift and not self._shift_held():
            self._release_keycode(self._kmap.shift_keycode)

    def _find_pressed(self, keysym: int) -> _PressedKey | None:
        # The release may name another level of the same key ("a" down, then
        # Shift released before "A" up), so the other case counts as a match.
        candidates = [keysym]
        char = keysym_to_char(keysym)
        if char is not None and char.swapcase() != char and len(char.swapcase()) == 1:
            candidates.append(char_to_keysym(char.swapcase()))
        for candidate in candidates:
            for record in self._pressed.values():
                if record.keysym == candidate:
                    return record
            keycode = self._kmap.keycode_of(candidate)
            if keycode is not None and keycode in self._pressed:
                return self._pressed[keycode]
        return None

    # -- pointer ----------------------------------------------------------

    def mouse_move(self, x: int, y: int) -> None:
        with self._op():
            cx, cy = self.clamp(x, y)
            self._fake(X.MotionNotify, 0, cx, cy)

    def button_down(self, button: MouseButton) -> None:
        number = _button_number(button)
        with self._op():
            self._fake(X.ButtonPress, number)
            self._buttons.add(number)

    def button_up(self, button: MouseButton) -> None:
        number = _button_number(button)
        with self._op():
            self._fake(X.ButtonRelease, number)
            self._buttons.discard(number)

    def scroll(self, x: int, y: int, dx: int, dy: int) -> None:
        with self._op():
            cx, cy = self.clamp(x, y)
            self._fake(X.MotionNotify, 0, cx, cy)
            for delta, negative, positive in ((dy, _SCROLL_UP, _SCROLL_DOWN),
                                              (dx, _SCROLL_LEFT, _SCROLL_RIGHT)):
                button = positive if delta > 0 else negative
                for _ in range(min(abs(int(delta)), SCROLL_CLICK_LIMIT)):
                    self._fake(X.ButtonPress, button)
                    self._fake(X.ButtonRelease, button)

    def cursor_position(self) -> tuple[int, int]:
        with self._op():
            reply = self._root.query_pointer()
            return int(reply.root_x), int(reply.root_y)

    # -- keyboard ---------------------------------------------------------

    def key_down(self, key: KeyLike) -> None:
        keysym = resolve_keysym(key)
        with self._op():
            self._kmap.drain_events()
            if self._press_keysym(keysym) is None:
                logger.debug("key %s already down; ignoring repeat", keysym_name(keysym))

    def key_up(self, key: KeyLike) -> None:
        keysym = resolve_keysym(key)
        with self._op():
            record = self._find_pressed(keysym)
            if record is None:
                logger.debug("key_up for %s which is not down", keysym_name(keysym))
                return
            self._release_record(record)

    def key_combo(self, combo: str | KeyCombo) -> None:
        parsed = combo_of(combo)
        with self._op():
            self._kmap.drain_events()
            records = self._press_combo(parsed)
            self._sync()
            self._release_records(records)

    def hold_key(self, combo: str | KeyCombo, duration: float) -> None:
        parsed = combo_of(combo)
        if duration < 0:
            raise ValueError(f"negative duration {duration!r}")
        with self._op():
            self._kmap.drain_events()
            records = self._press_combo(parsed)
        try:
            time.sleep(duration)
        finally:
            with self._op():
                self._release_records(records)

    def _press_combo(self, combo: KeyCombo) -> list[_PressedKey]:
        # Bind every missing keysym first so no remap happens mid-combo.
        self._kmap.bind(combo.keysyms, protect=set(combo.keysyms), busy=self._pressed.keys())
        records: list[_PressedKey] = []
        try:
            for keysym in combo.keysyms:
                record = self._press_keysym(keysym)
                if record is not None:
                    records.append(record)
        except BaseException:
            self._release_records(records)
            raise
        return records

    def _release_records(self, records: list[_PressedKey]) -> None:
        for record in reversed(records):
            self._release_record(record)

    def type_text(self, text: str) -> None:
        keysyms: list[int] = []
        for char in text.replace("\r\n", "\n"):
            try:
                keysyms.append(char_to_keysym(char))
            except UnknownKeyError:
                logger.debug("skipping untypeable character %r", char)
        with self._lock:
            self._check_open()
            self._kmap.drain_events()
            capacity = max(len(self._kmap.spares), 1)
        start = 0
        while start < len(keysyms):
            with self._op():
                # A segment needs at most `capacity` new bindings, so none is
                # evicted while the segment still needs it.
                end = start
                new: set[int] = set()
                while end < len(keysyms) and end - start < TYPE_CHUNK:
                    ks = keysyms[end]
                    if not self._kmap.has(ks) and ks not in new:
                        if len(new) >= capacity:
                            break
                        new.add(ks)
                    end += 1
                segment = keysyms[start:end]
                self._kmap.bind(segment, protect=set(segment), busy=self._pressed.keys())
                self._type_segment(segment)
            start = end

    def _type_segment(self, segment: list[int]) -> None:
        user_shift = self._shift_held()
        shift_down = user_shift
        for keysym in segment:
            keycode, needs_shift = self._kmap.keycode_for(keysym, self._pressed.keys())
            if keycode in self._pressed:
                # The user holds this key; typing it again needs it up first.
                self._release_record(self._pressed[keycode])
            if needs_shift != shift_down and not user_shift:
                if needs_shift:
                    self._press_keycode(self._kmap.shift_keycode)
                else:
                    self._release_keycode(self._kmap.shift_keycode)
                shift_down = needs_shift
            self._press_keycode(keycode)
            self._release_keycode(keycode)
        if shift_down and not user_shift:
            self._release_keycode(self._kmap.shift_keycode)

    # -- healing ----------------------------------------------------------

    def release_all(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._release_everything()
            except (xerror.ConnectionClosedError, OSError) as e:
                raise InjectorError(f"lost X display {self._display_name!r}") from e

    def _release_everything(self) -> None:
        for record in sorted(self._pressed.values(), key=lambda r: -r.since):
            self._release_record(record)
        self._pressed.clear()
        for number in sorted(self._buttons):
            self._fake(X.ButtonRelease, number)
        self._buttons.clear()
        self._sync()
        # Sweep what the server still reports down (keys pressed by other
        # XTest clients, or state we lost track of).
        keymap = self._d.query_keymap()
        for byte_index, byte in enumerate(keymap):
            for bit in range(8):
                if byte & (1 << bit):
                    keycode = byte_index * 8 + bit
                    if keycode >= self._kmap.min_kc:
                        self._release_keycode(keycode)
        mask = int(self._root.query_pointer().mask)
        for number, bit in ((1, X.Button1Mask), (2, X.Button2Mask), (3, X.Button3Mask),
                            (4, X.Button4Mask), (5, X.Button5Mask)):
            if mask & bit:
                self._fake(X.ButtonRelease, number)
        self._sync()

    def release_stale(self, max_age_s: float) -> int:
        with self._op():
            now = time.monotonic()
            stale = [r for r in self._pressed.values()
                     if now - r.since > max_age_s and not is_modifier(r.keysym)]
            stale += [r for r in self._pressed.values()
                      if now - r.since > max_age_s and is_modifier(r.keysym)]
            for record in stale:
                logger.info("releasing stuck key %s", keysym_name(record.keysym))
                self._release_record(record)
            return len(stale)

    @property
    def pressed_keycodes(self) -> frozenset[int]:
        """Keycodes this injector currently holds down."""
        return frozenset(self._pressed)

    # -- clipboard --------------------------------------------------------

    def set_clipboard(self, text: str) -> None:
        with self._lock:
            self._check_open()
            if self._clipboard is None:
                self._clipboard = SelectionOwner(self._display_name)
            owner = self._clipboard
        owner.set_text(text)

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._release_everything()
                self._kmap.restore(self._pressed.keys())
            except (xerror.ConnectionClosedError, InjectorError, OSError):
                logger.warning("X display %s went away before close", self._display_name)
            if self._clipboard is not None:
                self._clipboard.close()
                self._clipboard = None
            try:
                self._d.close()
            except (xerror.ConnectionClosedError, OSError):
                pass


def _button_number(button: str) -> int:
    number = BUTTON_NUMBERS.get(button)
    if number is None:
        raise ValueError(f"unknown mouse button {button!r}")
    return number
