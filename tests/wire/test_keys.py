"""Key names: DOM KeyboardEvent.key values and xdotool-style combos."""

from __future__ import annotations

import pytest
from Xlib import XK

from wire.errors import UnknownKeyError, WireError
from wire.keys import (
    KeyCombo,
    char_to_keysym,
    dom_key_to_keysym,
    is_modifier,
    keysym_from_name,
    keysym_name,
    keysym_to_char,
    parse_combo,
    parse_key_sequence,
)


@pytest.mark.parametrize(
    ("key", "keysym"),
    [
        ("a", XK.XK_a), ("z", XK.XK_z), ("A", XK.XK_A), ("0", XK.XK_0), ("9", XK.XK_9),
        ("!", XK.XK_exclam), ("?", XK.XK_question), ("@", XK.XK_at), ("~", XK.XK_asciitilde),
        ("/", XK.XK_slash), ("\\", XK.XK_backslash), ('"', XK.XK_quotedbl), (" ", XK.XK_space),
        ("Enter", XK.XK_Return), ("Tab", XK.XK_Tab), ("Backspace", XK.XK_BackSpace),
        ("Escape", XK.XK_Escape), ("Delete", XK.XK_Delete), ("Insert", XK.XK_Insert),
        ("Home", XK.XK_Home), ("End", XK.XK_End), ("PageUp", XK.XK_Prior),
        ("PageDown", XK.XK_Next), ("ArrowUp", XK.XK_Up), ("ArrowDown", XK.XK_Down),
        ("ArrowLeft", XK.XK_Left), ("ArrowRight", XK.XK_Right), ("F1", XK.XK_F1),
        ("F12", XK.XK_F12), ("F24", XK.XK_F24), ("Shift", XK.XK_Shift_L),
        ("Control", XK.XK_Control_L), ("Alt", XK.XK_Alt_L), ("Meta", XK.XK_Super_L),
        ("Super", XK.XK_Super_L), ("AltGraph", XK.XK_ISO_Level3_Shift),
        ("CapsLock", XK.XK_Caps_Lock), ("ContextMenu", XK.XK_Menu),
        ("é", XK.XK_eacute), ("ß", XK.XK_ssharp), ("€", 0x10020AC), ("✓", 0x1002713),
    ],
)
def test_dom_keys(key: str, keysym: int) -> None:
    assert dom_key_to_keysym(key) == keysym


@pytest.mark.parametrize("key", ["", "NoSuchKey", "enter", "\x07", "Unidentified", "ab"])
def test_unknown_dom_keys(key: str) -> None:
    with pytest.raises(UnknownKeyError) as info:
        dom_key_to_keysym(key)
    assert isinstance(info.value, ValueError) and isinstance(info.value, WireError)


def test_char_keysym_round_trip() -> None:
    for char in "aZ5~ äÿ€✓Ωж中😀":
        assert keysym_to_char(char_to_keysym(char)) == char
    assert char_to_keysym("\n") == char_to_keysym("\r") == XK.XK_Return
    assert char_to_keysym("\t") == XK.XK_Tab
    assert keysym_to_char(XK.XK_Return) == "\n"
    assert keysym_to_char(XK.XK_F1) is None
    assert keysym_to_char(0x20AC) == "€"  # legacy EuroSign
    with pytest.raises(UnknownKeyError):
        char_to_keysym("\x00")
    with pytest.raises(UnknownKeyError):
        char_to_keysym("ab")


def keysyms(text: str) -> tuple[int, ...]:
    return parse_combo(text).keysyms


@pytest.mark.parametrize(
    ("combo", "expected"),
    [
        ("ctrl+shift+t", (XK.XK_Control_L, XK.XK_Shift_L, XK.XK_t)),
        ("Return", (XK.XK_Return,)),
        ("return", (XK.XK_Return,)),
        ("super", (XK.XK_Super_L,)),
        ("alt+F4", (XK.XK_Alt_L, XK.XK_F4)),
        ("alt+f4", (XK.XK_Alt_L, XK.XK_F4)),
        ("KP_Enter", (XK.XK_KP_Enter,)),
        ("kp_enter", (XK.XK_KP_Enter,)),
        ("CTRL+s", (XK.XK_Control_L, XK.XK_s)),
        ("Control+S", (XK.XK_Control_L, XK.XK_S)),
        ("win+e", (XK.XK_Super_L, XK.XK_e)),
        ("Meta+e", (XK.XK_Super_L, XK.XK_e)),
        ("cmd+c", (XK.XK_Super_L, XK.XK_c)),
        ("SHIFT+Tab", (XK.XK_Shift_L, XK.XK_Tab)),
        ("ctrl + alt + Delete", (XK.XK_Control_L, XK.XK_Alt_L, XK.XK_Delete)),
        ("ctrl++", (XK.XK_Control_L, XK.XK_plus)),
        ("+", (XK.XK_plus,)),
        ("ctrl+plus", (XK.XK_Control_L, XK.XK_plus)),
        ("Page_Down", (XK.XK_Next,)),
        ("pagedown", (XK.XK_Next,)),
        ("BackSpace", (XK.XK_BackSpace,)),
        ("Escape", (XK.XK_Escape,)),
        ("esc", (XK.XK_Escape,)),
        ("enter", (XK.XK_Return,)),
        ("ArrowUp", (XK.XK_Up,)),
        ("space", (XK.XK_space,)),
        ("F24", (XK.XK_F24,)),
        ("0xff0d", (XK.XK_Return,)),
    ],
)
def test_parse_combo(combo: str, expected: tuple[int, ...]) -> None:
    parsed = parse_combo(combo)
    assert parsed.keysyms == expected
    assert isinstance(parsed, KeyCombo)


@pytest.mark.parametrize("combo", ["", "  ", "ctrl+", "+ctrl", "ctrl+foo", "nosuchkey",
                                   "ctrl++a", "0xzz"])
def test_parse_combo_errors(combo: str) -> None:
    with pytest.raises(ValueError):
        parse_combo(combo)


def test_parse_key_sequence() -> None:
    seq = parse_key_sequence("ctrl+a Delete  Return")
    assert [c.keysyms for c in seq] == [
        (XK.XK_Control_L, XK.XK_a), (XK.XK_Delete,), (XK.XK_Return,)]
    with pytest.raises(UnknownKeyError):
        parse_key_sequence("")
    with pytest.raises(UnknownKeyError):
        parse_key_sequence("ctrl+a bogus")


def test_helpers() -> None:
    assert is_modifier(keysym_from_name("ctrl"))
    assert not is_modifier(keysym_from_name("a"))
    assert keysym_name(XK.XK_Return) == "Return"
    assert keysym_name(0x1002713) == "✓"
    with pytest.raises(AttributeError):
        parse_combo("a").text = "b"  # type: ignore[misc]
