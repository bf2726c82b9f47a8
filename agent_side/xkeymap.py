"""The X keyboard map as XTest injection needs it.

:class:`KeyboardMap` answers "which keycode (and Shift or not) types this
keysym?" and binds keysyms missing from the map to spare keycodes. Bindings are
kept (least recently used first out) rather than undone after every character:
undoing immediately races with clients that look the map up only when they
process the key event, the classic xdotool "wrong character" bug. A binding is
reused only after the server has had ``KEYMAP_SETTLE_S`` to deliver the earlier
key; :meth:`KeyboardMap.restore` undoes them all. A map changed by another client
(MappingNotify) is reloaded.

Not thread-safe: :class:`~agent_side.xtest.XTestInjector` calls it under its lock.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Final

from Xlib import X
from Xlib.display import Display
from Xlib.protocol import event as xevent

from wire.keys import XK_SHIFT_L, keysym_name

from .errors import InjectorError

__all__ = ["KEYMAP_SETTLE_S", "KeyboardMap"]

logger = logging.getLogger(__name__)

KEYMAP_SETTLE_S: Final = 0.05
"""Time given to clients to re-read the keymap after we change it, and the
minimum age of the last use of a spare keycode before it is rebound."""


class KeyboardMap:
    """Keysym -> keycode lookups on display ``d``, with spare keycodes bound on demand.

    ``busy`` arguments are the keycodes currently held down: their bindings are
    never evicted or undone.
    """

    def __init__(self, d: Display, display_name: str, sync: Callable[[], None]) -> None:
        self._d = d
        self._display_name = display_name
        self._sync = sync
        self.min_kc = int(d.display.info.min_keycode)
        self.max_kc = int(d.display.info.max_keycode)
        self._rows: list[list[int]] = []
        self._index: dict[int, tuple[int, int]] = {}
        self.spares: list[int] = []
        self._bound: OrderedDict[int, int] = OrderedDict()  # keysym -> spare keycode, LRU
        self._last_use: dict[int, float] = {}  # keycode -> monotonic time of last press
        self.shift_keycode = 0
        self.load()

    def has(self, keysym: int) -> bool:
        """Whether the keysym is on the map now (no binding needed)."""
        return keysym in self._index

    def keycode_of(self, keysym: int) -> int | None:
        """The keycode the keysym is on now, if any (no binding, no LRU update)."""
        hit = self._index.get(keysym)
        return None if hit is None else hit[0]

    def note_use(self, keycode: int) -> None:
        """A key event was sent for ``keycode`` (its binding must settle before reuse)."""
        self._last_use[keycode] = time.monotonic()

    def load(self) -> None:
        self._rows = self._fetch()
        modifier_codes = {kc for codes in self._d.get_modifier_mapping() for kc in codes if kc}
        bound_codes = set(self._bound.values())
        # Keycode 8 is skipped: some toolkits treat the lowest keycode specially.
        self.spares = [
            kc for kc in range(max(self.min_kc, 9), self.max_kc + 1)
            if kc not in modifier_codes and (kc in bound_codes or not any(self._row(kc)))
        ]
        self._reindex()
        shift = self._index.get(XK_SHIFT_L)
        if shift is None:
            raise InjectorError("keyboard map has no Shift_L key")
        self.shift_keycode = shift[0]

    def _row(self, keycode: int) -> list[int]:
        return self._rows[keycode - self.min_kc]

    def _reindex(self) -> None:
        index: dict[int, tuple[int, int]] = {}
        # Prefer the unshifted column, then shifted, then the lowest keycode.
        for column in (0, 1):
            for offset, row in enumerate(self._rows):
                if column < len(row) and row[column]:
                    index.setdefault(row[column], (offset + self.min_kc, column))
        self._index = index

    def _fetch(self) -> list[list[int]]:
        rows = self._d.get_keyboard_mapping(self.min_kc, self.max_kc - self.min_kc + 1)
        return [list(row) for row in rows]

    def drain_events(self) -> None:
        """Read our connection's events; reload the keymap if someone else changed it."""
        keyboard = modifiers = False
        while self._d.pending_events():
            ev = self._d.next_event()
            if isinstance(ev, xevent.MappingNotify):
                keyboard |= ev.request == X.MappingKeyboard
                modifiers |= ev.request == X.MappingModifier
        if keyboard:
            current = self._fetch()
            if current != self._rows:
                logger.info("keyboard map of %s changed; reloading", self._display_name)
                for ks, kc in list(self._bound.items()):
                    if current[kc - self.min_kc][:2] != [ks, ks]:
                        del self._bound[ks]
                modifiers = True
        if modifiers:
            self.load()

    def lookup(self, keysym: int) -> tuple[int, bool] | None:
        """(keycode, needs_shift) for a keysym already on the keyboard map."""
        hit = self._index.get(keysym)
        if hit is None:
            return None
        if keysym in self._bound:
            self._bound.move_to_end(keysym)
        return hit[0], hit[1] == 1

    def bind(self, keysyms: Sequence[int], protect: set[int], busy: Collection[int]) -> None:
        """Bind keysyms missing from the map to spare keycodes, in one settle.

        ``protect`` are keysyms needed next; their bindings are not evicted.
        """
        missing = [ks for ks in dict.fromkeys(keysyms) if ks not in self._index]
        if not missing:
            return
        used = set(self._bound.values())
        free = [kc for kc in self.spares if kc not in used]
        changes: list[tuple[int, int]] = []
        for ks in missing:
            if free:
                kc = free.pop(0)
            else:
                victim = next(
                    (old for old, code in self._bound.items()
                     if old not in protect and code not in busy),
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
        width = len(self._rows[0])
        for ks, kc in changes:
            row = [ks, ks] + [0] * (width - 2)
            self._d.change_keyboard_mapping(kc, [row])
            self._rows[kc - self.min_kc] = row
            self._bound[ks] = kc
            self._index[ks] = (kc, 0)
            logger.debug("bound %s to spare keycode %d", keysym_name(ks), kc)
        self._sync()
        # The server stores the binding in its own form (group 1 copied to group 2).
        self._rows = self._fetch()
        self._reindex()
        self.drain_events()
        # The server applied the change; let other clients process MappingNotify.
        time.sleep(KEYMAP_SETTLE_S)

    def restore(self, busy: Collection[int]) -> None:
        if not self._bound:
            return
        width = len(self._rows[0])
        for kc in self._bound.values():
            if kc not in busy:
                self._d.change_keyboard_mapping(kc, [[0] * width])
                self._rows[kc - self.min_kc] = [0] * width
        self._bound.clear()
        self._reindex()
        self._sync()

    def keycode_for(self, keysym: int, busy: Collection[int]) -> tuple[int, bool]:
        hit = self.lookup(keysym)
        if hit is None:
            self.bind([keysym], protect={keysym}, busy=busy)
            hit = self.lookup(keysym)
            assert hit is not None
        return hit
