"""Input injection into an X display.

:class:`InputInjector` is the swappable interface; :class:`XTestInjector`
drives a real X server through the XTEST extension and :class:`NullInjector`
only tracks state (headless tests, sessions without input). Build one with
:func:`create_injector`.

All methods are synchronous and meant for one worker thread; each instance
also holds a lock so a stray call from another thread (e.g. ``release_all``
on disconnect) cannot interleave with a half-sent key sequence. XTest
methods flush and XSync, so the server has the event when they return.

Self-healing (STYLE.md rule 19): a key is released with the keycode that was
used to press it, whatever name the release names; :meth:`release_all`
releases every key and button the server reports down; :meth:`release_stale`
sweeps keys held for too long.

Characters missing from the keyboard map are typed by binding their keysym
to a spare (unbound) keycode. Bindings are kept (least recently used first
out) rather than undone after every character: undoing immediately races
with clients that look the map up only when they process the key event, and
is the classic xdotool "wrong character" bug. A binding is reused only after
the server has had ``KEYMAP_SETTLE_S`` to deliver the earlier key, and all
bindings are undone in :meth:`close`.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from Xlib import X, Xatom
from Xlib import error as xerror
from Xlib.display import Display
from Xlib.ext import xtest
from Xlib.protocol import event as xevent

from wire.actions import MouseButton
from wire.errors import UnknownKeyError
from wire.keys import (
    XK_SHIFT_L,
    KeyCombo,
    char_to_keysym,
    dom_key_to_keysym,
    is_modifier,
    keysym_from_name,
    keysym_name,
    keysym_to_char,
    parse_combo,
)

from .errors import InjectorError

__all__ = [
    "BUTTON_NUMBERS",
    "InjectorKind",
    "InputInjector",
    "MouseButton",
    "NullInjector",
    "XTestInjector",
    "create_injector",
]

logger = logging.getLogger(__name__)

InjectorKind: TypeAlias = Literal["xtest", "null"]

BUTTON_NUMBERS: Final[dict[str, int]] = {"left": 1, "middle": 2, "right": 3}
_SCROLL_UP, _SCROLL_DOWN, _SCROLL_LEFT, _SCROLL_RIGHT = 4, 5, 6, 7

SCROLL_CLICK_LIMIT: Final = 100
"""Most wheel clicks sent for one scroll call per axis; larger deltas are clamped."""
TYPE_CHUNK: Final = 64
"""Characters sent between two XSyncs while typing."""
KEYMAP_SETTLE_S: Final = 0.05
"""Time given to clients to re-read the keymap after we change it, and the
minimum age of the last use of a spare keycode before it is rebound."""
CLIPBOARD_TIMEOUT_S: Final = 5.0

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


def _combo(combo: str | KeyCombo) -> KeyCombo:
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
            self._record("key_combo", _combo(combo).text)

    def hold_key(self, combo: str | KeyCombo, duration: float) -> None:
        with self._lock:
            self._record("hold_key", _combo(combo).text, duration)

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
            self._d = Display(display)
        except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as e:
            raise InjectorError(f"cannot open X display {display!r}") from e
        if not self._d.has_extension("XTEST"):
            self._d.close()
            raise InjectorError(f"X display {display!r} lacks the XTEST extension")
        self._root = self._d.screen().root
        self._min_kc = int(self._d.display.info.min_keycode)
        self._max_kc = int(self._d.display.info.max_keycode)
        self._keymap: list[list[int]] = []
        self._index: dict[int, tuple[int, int]] = {}
        self._spares: list[int] = []
        self._bound: OrderedDict[int, int] = OrderedDict()  # keysym -> spare keycode, LRU
        self._last_use: dict[int, float] = {}  # keycode -> monotonic time of last press
        self._pressed: dict[int, _PressedKey] = {}  # keycode -> press record
        self._buttons: set[int] = set()
        self._shift_keycode = 0
        self._load_keymap()
        self._clipboard: _SelectionOwner | None = None

    # -- keymap ---------------------------------------------------------

    def _load_keymap(self) -> None:
        self._keymap = self._fetch_keymap()
        modifier_codes = {kc for codes in self._d.get_modifier_mapping() for kc in codes if kc}
        bound_codes = set(self._bound.values())
        # Keycode 8 is skipped: some toolkits treat the lowest keycode specially.
        self._spares = [
            kc for kc in range(max(self._min_kc, 9), self._max_kc + 1)
            if kc not in modifier_codes and (kc in bound_codes or not any(self._row(kc)))
        ]
        self._reindex()
        shift = self._index.get(XK_SHIFT_L)
        if shift is None:
            raise InjectorError("keyboard map has no Shift_L key")
        self._shift_keycode = shift[0]

    def _row(self, keycode: int) -> list[int]:
        return self._keymap[keycode - self._min_kc]

    def _reindex(self) -> None:
        index: dict[int, tuple[int, int]] = {}
        # Prefer the unshifted column, then shifted, then the lowest keycode.
        for column in (0, 1):
            for offset, row in enumerate(self._keymap):
                if column < len(row) and row[column]:
                    index.setdefault(row[column], (offset + self._min_kc, column))
        self._index = index

    def _fetch_keymap(self) -> list[list[int]]:
        rows = self._d.get_keyboard_mapping(self._min_kc, self._max_kc - self._min_kc + 1)
        return [list(row) for row in rows]

    def _drain_events(self) -> None:
        """Read our connection's events; reload the keymap if someone else changed it."""
        keyboard = modifiers = False
        while self._d.pending_events():
            ev = self._d.next_event()
            if isinstance(ev, xevent.MappingNotify):
                keyboard |= ev.request == X.MappingKeyboard
                modifiers |= ev.request == X.MappingModifier
        if keyboard:
            current = self._fetch_keymap()
            if current != self._keymap:
                logger.info("keyboard map of %s changed; reloading", self._display_name)
                for ks, kc in list(self._bound.items()):
                    if current[kc - self._min_kc][:2] != [ks, ks]:
                        del self._bound[ks]
                modifiers = True
        if modifiers:
            self._load_keymap()

    def _lookup(self, keysym: int) -> tuple[int, bool] | None:
        """(keycode, needs_shift) for a keysym already on the keyboard map."""
        hit = self._index.get(keysym)
        if hit is None:
            return None
        if keysym in self._bound:
            self._bound.move_to_end(keysym)
        return hit[0], hit[1] == 1

    def _bind(self, keysyms: Sequence[int], protect: set[int]) -> None:
        """Bind keysyms missing from the map to spare keycodes, in one settle.

        ``protect`` are keysyms needed next; their bindings are not evicted.
        """
        missing = [ks for ks in dict.fromkeys(keysyms) if ks not in self._index]
        if not missing:
            return
        used = set(self._bound.values())
        free = [kc for kc in self._spares if kc not in used]
        changes: list[tuple[int, int]] = []
        for ks in missing:
            if free:
                kc = free.pop(0)
            else:
                victim = next(
                    (old for old, code in self._bound.items()
                     if old not in protect and code not in self._pressed),
                    None,
                )
                if victim is None:
                    raise InjectorError("no spare keycode left to type a character")
                kc = self._bound.pop(victim)
                del self._index[victim]
            changes.append((ks, kc))
        # Give clients time to look up the previous meaning of reused keycodes.
        now = time.monotonic()
        wait = max((self._last_use.get(kc, 0.0) + KEYMAP_SETTLE_S - now for _, kc in changes),
                   default=0.0)
        if wait > 0:
            time.sleep(wait)
        width = len(self._keymap[0])
        for ks, kc in changes:
            row = [ks, ks] + [0] * (width - 2)
            self._d.change_keyboard_mapping(kc, [row])
            self._keymap[kc - self._min_kc] = row
            self._bound[ks] = kc
            self._index[ks] = (kc, 0)
            logger.debug("bound %s to spare keycode %d", keysym_name(ks), kc)
        self._sync()
        # The server stores the binding in its own form (group 1 copied to group 2).
        self._keymap = self._fetch_keymap()
        self._reindex()
        self._drain_events()
        # The server applied the change; let other clients process MappingNotify.
        time.sleep(KEYMAP_SETTLE_S)

    def _restore_keymap(self) -> None:
        if not self._bound:
            return
        width = len(self._keymap[0])
        for kc in self._bound.values():
            if kc not in self._pressed:
                self._d.change_keyboard_mapping(kc, [[0] * width])
                self._keymap[kc - self._min_kc] = [0] * width
        self._bound.clear()
        self._reindex()
        self._sync()

    def _keycode_for(self, keysym: int) -> tuple[int, bool]:
        hit = self._lookup(keysym)
        if hit is None:
            self._bind([keysym], protect={keysym})
            hit = self._lookup(keysym)
            assert hit is not None
        return hit

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
        self._last_use[keycode] = time.monotonic()

    def _release_keycode(self, keycode: int) -> None:
        self._fake(X.KeyRelease, keycode)
        self._last_use[keycode] = time.monotonic()

    def _shift_held(self) -> bool:
        return self._shift_keycode in self._pressed

    def _press_keysym(self, keysym: int) -> _PressedKey | None:
        keycode, needs_shift = self._keycode_for(keysym)
        if keycode in self._pressed:
            return None  # already down: a repeat would need a release first
        added_shift = needs_shift and not self._shift_held()
        if added_shift:
            self._press_keycode(self._shift_keycode)
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
            self._release_keycode(self._shift_keycode)

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
            hit = self._index.get(candidate)
            if hit is not None and hit[0] in self._pressed:
                return self._pressed[hit[0]]
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
            self._drain_events()
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
        parsed = _combo(combo)
        with self._op():
            self._drain_events()
            records = self._press_combo(parsed)
            self._sync()
            self._release_records(records)

    def hold_key(self, combo: str | KeyCombo, duration: float) -> None:
        parsed = _combo(combo)
        if duration < 0:
            raise ValueError(f"negative duration {duration!r}")
        with self._op():
            self._drain_events()
            records = self._press_combo(parsed)
        try:
            time.sleep(duration)
        finally:
            with self._op():
                self._release_records(records)

    def _press_combo(self, combo: KeyCombo) -> list[_PressedKey]:
        # Bind every missing keysym first so no remap happens mid-combo.
        self._bind(combo.keysyms, protect=set(combo.keysyms))
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
            self._drain_events()
            capacity = max(len(self._spares), 1)
        start = 0
        while start < len(keysyms):
            with self._op():
                # A segment needs at most `capacity` new bindings, so none is
                # evicted while the segment still needs it.
                end = start
                new: set[int] = set()
                while end < len(keysyms) and end - start < TYPE_CHUNK:
                    ks = keysyms[end]
                    if ks not in self._index and ks not in new:
                        if len(new) >= capacity:
                            break
                        new.add(ks)
                    end += 1
                segment = keysyms[start:end]
                self._bind(segment, protect=set(segment))
                self._type_segment(segment)
            start = end

    def _type_segment(self, segment: list[int]) -> None:
        user_shift = self._shift_held()
        shift_down = user_shift
        for keysym in segment:
            keycode, needs_shift = self._keycode_for(keysym)
            if keycode in self._pressed:
                # The user holds this key; typing it again needs it up first.
                self._release_record(self._pressed[keycode])
            if needs_shift != shift_down and not user_shift:
                if needs_shift:
                    self._press_keycode(self._shift_keycode)
                else:
                    self._release_keycode(self._shift_keycode)
                shift_down = needs_shift
            self._press_keycode(keycode)
            self._release_keycode(keycode)
        if shift_down and not user_shift:
            self._release_keycode(self._shift_keycode)

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
                    if keycode >= self._min_kc:
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
                self._clipboard = _SelectionOwner(self._display_name)
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
                self._restore_keymap()
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


class _SelectionOwner:
    """Owns CLIPBOARD and PRIMARY from a hidden window; a thread answers requests.

    The thread has its own X connection, so it never contends with injection.
    Texts larger than one X request (~256 KiB) would need the INCR protocol,
    which is not implemented; callers cap clipboard text at 64 KiB.
    """

    def __init__(self, display: str) -> None:
        try:
            self._d = Display(display)
        except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as e:
            raise InjectorError(f"cannot open X display {display!r}") from e
        self._window = self._d.screen().root.create_window(
            -10, -10, 1, 1, 0, X.CopyFromParent, X.InputOnly, X.CopyFromParent,
            event_mask=X.PropertyChangeMask,
        )
        atom = self._d.intern_atom
        self._selections = (atom("CLIPBOARD"), Xatom.PRIMARY)
        self._targets = atom("TARGETS")
        self._utf8 = atom("UTF8_STRING")
        self._text_targets = {self._utf8, atom("TEXT"), atom("text/plain;charset=utf-8"),
                              atom("text/plain")}
        self._timestamp = atom("TIMESTAMP")
        self._data = b""
        self._lock = threading.Lock()
        self._pending: list[tuple[bytes, threading.Event]] = []
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="clipboard-owner", daemon=True)
        self._thread.start()

    def set_text(self, text: str) -> None:
        done = threading.Event()
        with self._lock:
            if self._stopping:
                raise InjectorError("clipboard owner is closed")
            self._pending.append((text.encode("utf-8"), done))
        os.write(self._wake_w, b"x")
        if not done.wait(CLIPBOARD_TIMEOUT_S):
            raise InjectorError("timed out taking the clipboard selection")

    def close(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(CLIPBOARD_TIMEOUT_S)
        os.close(self._wake_r)
        os.close(self._wake_w)
        try:
            self._d.close()
        except (xerror.ConnectionClosedError, OSError):
            pass

    def _run(self) -> None:
        try:
            while True:
                if not self._d.pending_events():
                    select.select([self._d.fileno(), self._wake_r], [], [], 1.0)
                with self._lock:
                    if self._stopping:
                        return
                    pending, self._pending = self._pending, []
                if pending:
                    os.read(self._wake_r, 4096)
                for data, done in pending:
                    self._take(data)
                    done.set()
                while self._d.pending_events():
                    self._handle(self._d.next_event())
        except (xerror.ConnectionClosedError, OSError):
            logger.warning("clipboard owner lost its X connection")

    def _take(self, data: bytes) -> None:
        self._data = data
        for selection in self._selections:
            self._window.set_selection_owner(selection, X.CurrentTime)
        self._d.sync()
        for selection in self._selections:
            owner = self._d.get_selection_owner(selection)
            if owner != self._window:
                logger.warning("could not take selection %d", selection)

    def _handle(self, ev: Any) -> None:
        if isinstance(ev, xevent.SelectionRequest):
            self._answer(ev)
        elif isinstance(ev, xevent.SelectionClear):
            logger.debug("selection %d taken by another client", ev.atom)

    def _answer(self, ev: Any) -> None:
        prop = ev.property or ev.target  # obsolete clients send property None
        requestor = ev.requestor
        catch = xerror.CatchError()
        if ev.selection not in self._selections:
            prop = X.NONE
        elif ev.target == self._targets:
            targets = [self._targets, self._timestamp, Xatom.STRING, *self._text_targets]
            requestor.change_property(prop, Xatom.ATOM, 32, targets, onerror=catch)
        elif ev.target in self._text_targets:
            requestor.change_property(prop, self._utf8, 8, self._data, onerror=catch)
        elif ev.target == Xatom.STRING:
            latin1 = self._data.decode("utf-8").encode("latin-1", errors="replace")
            requestor.change_property(prop, Xatom.STRING, 8, latin1, onerror=catch)
        elif ev.target == self._timestamp:
            requestor.change_property(prop, Xatom.INTEGER, 32, [X.CurrentTime], onerror=catch)
        else:
            prop = X.NONE
        notify = xevent.SelectionNotify(
            time=ev.time, requestor=requestor, selection=ev.selection,
            target=ev.target, property=prop,
        )
        requestor.send_event(notify, onerror=catch)
        self._d.flush()


def create_injector(
    kind: InjectorKind, *, display: str | None = None, width: int, height: int
) -> InputInjector:
    """Build an injector: ``"xtest"`` (needs ``display``) or ``"null"``."""
    if kind == "xtest":
        if not display:
            raise ValueError("the xtest injector needs a display, e.g. ':1'")
        return XTestInjector(display, width, height)
    if kind == "null":
        return NullInjector(width, height)
    raise ValueError(f"unknown injector kind {kind!r}")
