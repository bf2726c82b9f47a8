"""Key names to X keysyms.

Two vocabularies arrive here:

* DOM ``KeyboardEvent.key`` values from the viewer's data channel
  (``"a"``, ``"A"``, ``"!"``, ``"Enter"``, ``"ArrowLeft"``, ``"Shift"`` ...), see
  :func:`dom_key_to_keysym`;
* xdotool-style combos from the computer-use action API
  (``"ctrl+shift+t"``, ``"Return"``, ``"alt+F4"``, ``"KP_Enter"``), see
  :func:`parse_combo` and :func:`parse_key_sequence`.

Printable characters map to their keysym: Latin-1 characters are their own
keysym, every other code point uses the Unicode keysym ``0x01000000 + cp``.
Unknown names raise :class:`~agent_side.errors.UnknownKeyError` (a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from Xlib import XK

from wire.errors import UnknownKeyError

__all__ = [
    "MODIFIER_KEYSYMS",
    "KeyCombo",
    "char_to_keysym",
    "dom_key_to_keysym",
    "is_modifier",
    "keysym_from_name",
    "keysym_name",
    "keysym_to_char",
    "parse_combo",
    "parse_key_sequence",
]

for _group in ("latin2", "latin3", "latin4", "greek", "cyrillic", "xkb", "technical",
               "special", "publishing", "xf86"):
    XK.load_keysym_group(_group)

UNICODE_KEYSYM_OFFSET = 0x01000000
"""Keysyms ``0x01000100..0x0110FFFF`` stand for the Unicode code point minus this offset."""


def _ks(name: str) -> int:
    value = XK.string_to_keysym(name)
    if not value:
        raise RuntimeError(f"python-xlib lacks keysym {name}")  # pragma: no cover
    return int(value)


XK_RETURN = _ks("Return")
XK_TAB = _ks("Tab")
XK_SHIFT_L = _ks("Shift_L")

_DOM_NAMED: dict[str, int] = {
    "Enter": XK_RETURN,
    "Tab": XK_TAB,
    "Backspace": _ks("BackSpace"),
    "Escape": _ks("Escape"),
    "Esc": _ks("Escape"),
    "Delete": _ks("Delete"),
    "Del": _ks("Delete"),
    "Insert": _ks("Insert"),
    "Home": _ks("Home"),
    "End": _ks("End"),
    "PageUp": _ks("Prior"),
    "PageDown": _ks("Next"),
    "ArrowUp": _ks("Up"),
    "ArrowDown": _ks("Down"),
    "ArrowLeft": _ks("Left"),
    "ArrowRight": _ks("Right"),
    "Up": _ks("Up"),
    "Down": _ks("Down"),
    "Left": _ks("Left"),
    "Right": _ks("Right"),
    "Shift": XK_SHIFT_L,
    "Control": _ks("Control_L"),
    "Alt": _ks("Alt_L"),
    # The DOM "Meta" key is the Windows / Command key, which X desktops call Super.
    "Meta": _ks("Super_L"),
    "Super": _ks("Super_L"),
    "OS": _ks("Super_L"),
    "Hyper": _ks("Hyper_L"),
    "AltGraph": _ks("ISO_Level3_Shift"),
    "CapsLock": _ks("Caps_Lock"),
    "NumLock": _ks("Num_Lock"),
    "ScrollLock": _ks("Scroll_Lock"),
    "ContextMenu": _ks("Menu"),
    "PrintScreen": _ks("Print"),
    "Pause": _ks("Pause"),
    "Clear": _ks("Clear"),
    "Help": _ks("Help"),
    "Cancel": _ks("Cancel"),
    "Spacebar": _ks("space"),
    "AudioVolumeDown": 0x1008FF11,
    "AudioVolumeMute": 0x1008FF12,
    "AudioVolumeUp": 0x1008FF13,
    "MediaPlayPause": 0x1008FF14,
    "MediaStop": 0x1008FF15,
    "MediaTrackPrevious": 0x1008FF16,
    "MediaTrackNext": 0x1008FF17,
}
_DOM_NAMED.update({f"F{n}": _ks(f"F{n}") for n in range(1, 25)})

DOM_KEYS: Mapping[str, int] = MappingProxyType(_DOM_NAMED)
"""Named (non-character) DOM ``KeyboardEvent.key`` values and their keysyms."""

MODIFIER_KEYSYMS: frozenset[int] = frozenset(
    _ks(n) for n in ("Shift_L", "Shift_R", "Control_L", "Control_R", "Alt_L", "Alt_R",
                     "Meta_L", "Meta_R", "Super_L", "Super_R", "Hyper_L", "Hyper_R",
                     "ISO_Level3_Shift", "Mode_switch")
)
"""Keysyms of modifier keys: a combo presses these first and releases them last."""

# Modifier aliases accepted in combos, case-insensitively.
_COMBO_ALIASES: dict[str, int] = {
    "ctrl": _ks("Control_L"),
    "control": _ks("Control_L"),
    "alt": _ks("Alt_L"),
    "option": _ks("Alt_L"),
    "shift": XK_SHIFT_L,
    "super": _ks("Super_L"),
    "win": _ks("Super_L"),
    "windows": _ks("Super_L"),
    "meta": _ks("Super_L"),
    "cmd": _ks("Super_L"),
    "command": _ks("Super_L"),
    "altgr": _ks("ISO_Level3_Shift"),
    # Common names agents use that are not X keysym names.
    "enter": XK_RETURN,
    "esc": _ks("Escape"),
    "del": _ks("Delete"),
    "pageup": _ks("Prior"),
    "pagedown": _ks("Next"),
    "pgup": _ks("Prior"),
    "pgdn": _ks("Next"),
    "backspace": _ks("BackSpace"),
    "arrowup": _ks("Up"),
    "arrowdown": _ks("Down"),
    "arrowleft": _ks("Left"),
    "arrowright": _ks("Right"),
    "capslock": _ks("Caps_Lock"),
    "printscreen": _ks("Print"),
    "space": _ks("space"),
}

_XK_NAMES: dict[str, int] = {}
_XK_NAMES_LOWER: dict[str, int] = {}
_KEYSYM_NAMES: dict[int, str] = {}
for _attr in sorted(dir(XK)):
    if _attr.startswith("XK_"):
        _value = getattr(XK, _attr)
        if isinstance(_value, int) and _value:
            _XK_NAMES[_attr[3:]] = _value
            _XK_NAMES_LOWER.setdefault(_attr[3:].lower(), _value)
            _KEYSYM_NAMES.setdefault(_value, _attr[3:])

# Legacy keysyms for characters whose Unicode keysym is not what keymaps carry.
_LEGACY_CHAR_KEYSYMS: dict[int, str] = {0x20AC: "\u20ac"}


def char_to_keysym(char: str) -> int:
    """Keysym that types *char* (a single character).

    ``"\\n"`` and ``"\\r"`` map to Return and ``"\\t"`` to Tab; other control
    characters raise :class:`UnknownKeyError`.
    """
    if len(char) != 1:
        raise UnknownKeyError(char, f"expected one character, got {char!r}")
    cp = ord(char)
    if char in ("\n", "\r"):
        return XK_RETURN
    if char == "\t":
        return XK_TAB
    if cp < 0x20 or 0x7F <= cp < 0xA0 or 0xD800 <= cp < 0xE000:
        raise UnknownKeyError(char, f"character {char!r} cannot be typed")
    if cp < 0x100:
        return cp
    return UNICODE_KEYSYM_OFFSET + cp


def keysym_to_char(keysym: int) -> str | None:
    """The character a keysym produces, or ``None`` for non-character keys."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if UNICODE_KEYSYM_OFFSET + 0x100 <= keysym <= UNICODE_KEYSYM_OFFSET + 0x10FFFF:
        return chr(keysym - UNICODE_KEYSYM_OFFSET)
    if keysym in _LEGACY_CHAR_KEYSYMS:
        return _LEGACY_CHAR_KEYSYMS[keysym]
    if keysym in (XK_RETURN, _ks("KP_Enter")):
        return "\n"
    if keysym == XK_TAB:
        return "\t"
    return None


def keysym_name(keysym: int) -> str:
    """Human-readable name of a keysym (for logs and errors)."""
    name = _KEYSYM_NAMES.get(keysym)
    if name:
        return name
    char = keysym_to_char(keysym)
    if char is not None and char.isprintable():
        return char
    return f"0x{keysym:x}"


def is_modifier(keysym: int) -> bool:
    return keysym in MODIFIER_KEYSYMS


def dom_key_to_keysym(key: str) -> int:
    """Keysym for a DOM ``KeyboardEvent.key`` value.

    Single characters map to their own keysym (``"A"`` is ``XK_A``, ``"!"`` is
    ``XK_exclam``); named keys use :data:`DOM_KEYS`.
    """
    if len(key) == 1:
        return char_to_keysym(key)
    keysym = DOM_KEYS.get(key)
    if keysym is None:
        raise UnknownKeyError(key)
    return keysym


def keysym_from_name(name: str) -> int:
    """Keysym for one xdotool-style key name.

    Accepted, in order: a single character (case kept, so ``"T"`` means
    shift+t), a modifier or common alias (case-insensitive: ``ctrl``, ``win``,
    ``enter``...), an exact X keysym name (``Return``, ``KP_Enter``, ``F4``), a
    DOM key name (``ArrowUp``), an X keysym name in any case (``return``),
    or a hexadecimal keysym (``0xff0d``).
    """
    if len(name) == 1:
        return char_to_keysym(name)
    if not name:
        raise UnknownKeyError(name, "empty key name")
    lowered = name.lower()
    for table, lookup in ((_COMBO_ALIASES, lowered), (_XK_NAMES, name), (_DOM_NAMED, name),
                          (_XK_NAMES_LOWER, lowered)):
        value = table.get(lookup)
        if value is not None:
            return value
    if lowered.startswith("0x"):
        try:
            value = int(lowered, 16)
        except ValueError:
            pass
        else:
            if 0 < value <= 0x1FFFFFFF:
                return value
    raise UnknownKeyError(name)


@dataclass(frozen=True)
class KeyCombo:
    """Keys pressed together: pressed in order, released in reverse order."""

    keysyms: tuple[int, ...]
    """Keysyms in press order (as written, e.g. ctrl, shift, t)."""
    text: str
    """The combo as written, for logs."""

    def __post_init__(self) -> None:
        if not self.keysyms:
            raise UnknownKeyError(self.text, "empty key combo")


def parse_combo(text: str) -> KeyCombo:
    """Parse one ``+``-joined combo such as ``"ctrl+shift+t"`` or ``"ctrl++"``."""
    stripped = text.strip()
    if not stripped:
        raise UnknownKeyError(text, "empty key combo")
    parts = stripped.split("+")
    # A literal "+" key shows up as empty parts: "ctrl++" -> ["ctrl", "", ""].
    names: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i].strip()
        if part:
            names.append(part)
        elif i + 1 < len(parts) and not parts[i + 1].strip():
            names.append("+")
            i += 1
        else:
            raise UnknownKeyError(text, f"malformed key combo {text!r}")
        i += 1
    return KeyCombo(keysyms=tuple(keysym_from_name(n) for n in names), text=stripped)


def parse_key_sequence(text: str) -> tuple[KeyCombo, ...]:
    """Parse xdotool ``key`` arguments: whitespace-separated combos, run in order."""
    words = text.split()
    if not words:
        raise UnknownKeyError(text, "empty key combo")
    return tuple(parse_combo(word) for word in words)
