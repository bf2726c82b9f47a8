"""XTestInjector against a real Xvfb and real X clients.

The recorder is a real X client: a full-screen window with its own connection
serviced by a thread; it refreshes its keymap on MappingNotify (like every
Xlib client) and turns KeyPress events into keysyms/characters with the
mapping current at that time.
"""


from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from Xlib import XK, X
from Xlib.display import Display
from Xlib.ext import xtest
from Xlib.protocol import event as xevent

from agent_side.errors import InjectorError
from agent_side.injector import NullInjector, XTestInjector, create_injector
from wire.errors import UnknownKeyError
from wire.keys import keysym_to_char

if TYPE_CHECKING:
    from tests.conftest import XDisplay


@dataclass(frozen=True)
class Recorded:
    kind: int
    """X.KeyPress, X.KeyRelease, X.ButtonPress or X.ButtonRelease."""
    detail: int
    """Keycode or button number."""
    keysym: int
    state: int
    x: int
    y: int
    time: int


class EventRecorder:
    def __init__(self, display: str, width: int, height: int) -> None:
        self.d = Display(display)
        root = self.d.screen().root
        self.window = root.create_window(
            0, 0, width, height, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
            override_redirect=True,
            event_mask=(X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask
                        | X.ButtonReleaseMask | X.StructureNotifyMask),
        )
        self.window.map()
        deadline = time.monotonic() + 5
        while True:
            ev = self.d.next_event()
            if ev.type == X.MapNotify:
                break
            assert time.monotonic() < deadline, "test window never mapped"
        self.window.set_input_focus(X.RevertToParent, X.CurrentTime)
        self.d.sync()
        self.events: list[Recorded] = []
        self._cond = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _keysym(self, keycode: int, state: int) -> int:
        if state & X.ShiftMask:
            shifted = self.d.keycode_to_keysym(keycode, 1)
            if shifted:
                return int(shifted)
        return int(self.d.keycode_to_keysym(keycode, 0))

    def _run(self) -> None:
        while True:
            if not self.d.pending_events():
                ready, _, _ = select.select([self.d.fileno(), self._stop_r], [], [], 1.0)
                if self._stop_r in ready:
                    return
            while self.d.pending_events():
                ev = self.d.next_event()
                if isinstance(ev, xevent.MappingNotify):
                    self.d.refresh_keyboard_mapping(ev)
                elif ev.type in (X.KeyPress, X.KeyRelease, X.ButtonPress, X.ButtonRelease):
                    keysym = self._keysym(ev.detail, ev.state) if ev.type in (
                        X.KeyPress, X.KeyRelease) else 0
                    rec = Recorded(ev.type, ev.detail, keysym, ev.state,
                                   ev.root_x, ev.root_y, ev.time)
                    with self._cond:
                        self.events.append(rec)
                        self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Recorded]], bool], timeout: float = 10.0,
                 what: str = "events") -> list[Recorded]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out waiting for {what}; got {self.events[-10:]}"
                self._cond.wait(remaining)
            return list(self.events)

    def presses(self) -> list[Recorded]:
        with self._cond:
            return [e for e in self.events if e.kind == X.KeyPress]

    def text(self) -> str:
        """Characters typed so far (KeyPresses without Control)."""
        chars = []
        for e in self.presses():
            if e.state & X.ControlMask:
                continue
            char = keysym_to_char(e.keysym)
            if char is not None:
                chars.append(char)
        return "".join(chars)

    def wait_text(self, expected: str, timeout: float = 15.0) -> str:
        """Poll until the typed text equals *expected* or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if text == expected or time.monotonic() > deadline:
                return text
            with self._cond:
                self._cond.wait(0.05)

    def clear(self) -> None:
        with self._cond:
            self.events.clear()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        os.close(self._stop_r)
        os.close(self._stop_w)
        self.d.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def injector(xvfb: XDisplay) -> Iterator[XTestInjector]:
    inj = XTestInjector(xvfb.name, xvfb.width, xvfb.height)
    try:
        yield inj
    finally:
        inj.close()


@pytest.fixture
def recorder(xvfb: XDisplay) -> Iterator[EventRecorder]:
    rec = EventRecorder(xvfb.name, xvfb.width, xvfb.height)
    try:
        yield rec
    finally:
        rec.close()


def keys_down(display: str) -> list[int]:
    d = Display(display)
    try:
        keymap = d.query_keymap()
        return [i * 8 + b for i, byte in enumerate(keymap) for b in range(8) if byte & (1 << b)]
    finally:
        d.close()


def pointer_mask(display: str) -> int:
    d = Display(display)
    try:
        return int(d.screen().root.query_pointer().mask)
    finally:
        d.close()


BUTTON_MASKS = X.Button1Mask | X.Button2Mask | X.Button3Mask | X.Button4Mask | X.Button5Mask


# ---------------------------------------------------------------- pointer


@pytest.mark.parametrize(("button", "number"), [("left", 1), ("middle", 2), ("right", 3)])
def test_click_arrives_at_position_with_button(
    injector: XTestInjector, recorder: EventRecorder, button: str, number: int
) -> None:
    injector.mouse_move(321, 123)
    injector.click(button)  # type: ignore[arg-type]
    events = recorder.wait_for(
        lambda ev: any(e.kind == X.ButtonRelease for e in ev), what="click")
    press = [e for e in events if e.kind == X.ButtonPress]
    assert [(e.detail, e.x, e.y) for e in press] == [(number, 321, 123)]
    assert injector.cursor_position() == (321, 123)


def test_mouse_move_is_clamped(injector: XTestInjector, xvfb: XDisplay) -> None:
    injector.mouse_move(-50, 10_000)
    assert injector.cursor_position() == (0, xvfb.height - 1)
    injector.mouse_move(99_999, -1)
    assert injector.cursor_position() == (xvfb.width - 1, 0)


def test_scroll_sends_one_wheel_click_per_unit(
    injector: XTestInjector, recorder: EventRecorder
) -> None:
    injector.scroll(200, 300, dx=-2, dy=3)
    events = recorder.wait_for(
        lambda ev: sum(e.kind == X.ButtonRelease for e in ev) >= 5, what="wheel clicks")
    press = [(e.detail, e.x, e.y) for e in events if e.kind == X.ButtonPress]
    assert press == [(5, 200, 300)] * 3 + [(6, 200, 300)] * 2
    recorder.clear()
    injector.scroll(10, 10, dx=1, dy=-1)
    events = recorder.wait_for(
        lambda ev: sum(e.kind == X.ButtonRelease for e in ev) >= 2, what="wheel clicks")
    assert [e.detail for e in events if e.kind == X.ButtonPress] == [4, 7]


def test_drag_holds_button_while_moving(
    injector: XTestInjector, recorder: EventRecorder, xvfb: XDisplay
) -> None:
    injector.mouse_move(10, 10)
    injector.button_down("left")
    assert pointer_mask(xvfb.name) & X.Button1Mask
    injector.mouse_move(500, 400)
    injector.button_up("left")
    events = recorder.wait_for(
        lambda ev: any(e.kind == X.ButtonRelease for e in ev), what="drag")
    assert [(e.kind, e.x, e.y) for e in events] == [
        (X.ButtonPress, 10, 10), (X.ButtonRelease, 500, 400)]
    assert not pointer_mask(xvfb.name) & BUTTON_MASKS


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "keysym", "shifted"),
    [("a", XK.XK_a, False), ("A", XK.XK_A, True), ("!", XK.XK_exclam, True),
     ("?", XK.XK_question, True), ("7", XK.XK_7, False), ("Enter", XK.XK_Return, False),
     ("ArrowLeft", XK.XK_Left, False), ("F5", XK.XK_F5, False), (" ", XK.XK_space, False),
     ("ö", XK.XK_odiaeresis, False), ("€", 0x10020AC, False)],
)
def test_dom_key_arrives_as_keysym(
    injector: XTestInjector, recorder: EventRecorder, xvfb: XDisplay,
    key: str, keysym: int, shifted: bool,
) -> None:
    injector.key_down(key)
    injector.key_up(key)
    events = recorder.wait_for(
        lambda ev: any(e.kind == X.KeyRelease and e.keysym == keysym for e in ev),
        what=f"release of {key!r}")
    presses = [e for e in events if e.kind == X.KeyPress and e.keysym == keysym]
    assert len(presses) == 1
    assert bool(presses[0].state & X.ShiftMask) == shifted
    assert keys_down(xvfb.name) == []


def test_release_uses_keycode_of_press(
    injector: XTestInjector, recorder: EventRecorder, xvfb: XDisplay
) -> None:
    injector.key_down("Shift")
    injector.key_down("A")
    injector.key_up("Shift")
    injector.key_up("a")  # the browser reports the other level once Shift is up
    assert keys_down(xvfb.name) == []
    injector.key_down("ü")
    injector.key_up("Ü")  # not on the keymap at all: found through the press record
    assert keys_down(xvfb.name) == []
    assert injector.pressed_keycodes == frozenset()
    recorder.wait_for(lambda ev: sum(e.kind == X.KeyRelease for e in ev) >= 3)


def test_shifted_key_down_keeps_shift_only_while_needed(
    injector: XTestInjector, recorder: EventRecorder, xvfb: XDisplay
) -> None:
    injector.key_down("!")
    down = keys_down(xvfb.name)
    assert len(down) == 2  # Shift and the "1" key
    injector.key_up("!")
    assert keys_down(xvfb.name) == []
    recorder.wait_for(lambda ev: any(e.keysym == XK.XK_exclam for e in ev))


def test_combo_arrives_with_modifier_state(
    injector: XTestInjector, recorder: EventRecorder, xvfb: XDisplay
) -> None:
    injector.key_combo("ctrl+shift+t")
    events = recorder.wait_for(
        lambda ev: sum(e.kind == X.KeyRelease for e in ev) >= 3, what="combo")
    t_press = [e for e in events if e.kind == X.KeyPress and e.keysym in (XK.XK_t, XK.XK_T)]
    assert len(t_press) == 1
    assert t_press[0].state & X.ControlMask and t_press[0].state & X.ShiftMask
    # pressed in order, released in reverse
    presses = [e.keysym for e in events if e.kind == X.KeyPress]
    releases = [e.detail for e in events if e.kind == X.KeyRelease]
    assert presses[:2] == [XK.XK_Control_L, XK.XK_Shift_L]
    assert releases == [e.detail for e in events if e.kind == X.KeyPress][::-1]
    assert keys_down(xvfb.name) == []


def test_combo_with_key_missing_from_keymap(
    injector: XTestInjector, recorder: EventRecorder, xvfb: XDisplay
) -> None:
    injector.key_combo("alt+F13")
    events = recorder.wait_for(
        lambda ev: sum(e.kind == X.KeyRelease for e in ev) >= 2, what="combo")
    f13 = [e for e in events if e.kind == X.KeyPress and e.keysym == XK.XK_F13]
    assert len(f13) == 1 and f13[0].state & X.Mod1Mask
    assert keys_down(xvfb.name) == []


def test_hold_key_holds_for_duration(
    injector: XTestInjector, recorder: EventRecorder, xvfb: XDisplay
) -> None:
    injector.hold_key("shift+b", 0.3)
    events = recorder.wait_for(
        lambda ev: sum(e.kind == X.KeyRelease for e in ev) >= 2, what="hold")
    b_press = next(e for e in events if e.kind == X.KeyPress and e.keysym == XK.XK_B)
    b_release = next(e for e in events if e.kind == X.KeyRelease and e.detail == b_press.detail)
    assert b_release.time - b_press.time >= 290  # X server milliseconds
    assert keys_down(xvfb.name) == []


# ---------------------------------------------------------------- typing


def test_type_text_unicode_arrives_exactly(
    injector: XTestInjector, recorder: EventRecorder
) -> None:
    text = "Hello, wörld! ✓ €\tend"
    injector.type_text(text)
    assert recorder.wait_text(text) == text


def test_type_text_newline_and_shifted_punctuation(
    injector: XTestInjector, recorder: EventRecorder
) -> None:
    text = 'a\nB\r\nC ~!@#$%^&*()_+{}|:"<>? `-=[]\\;\',./'
    injector.type_text(text)
    expected = text.replace("\r\n", "\n")
    assert recorder.wait_text(expected) == expected


def test_type_long_text_with_more_distinct_chars_than_spare_keycodes(
    injector: XTestInjector, recorder: EventRecorder
) -> None:
    greek = "".join(chr(c) for c in range(0x3B1, 0x3CA))  # 25 letters, more than spares
    cjk = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 30))
    ascii_part = "The quick brown fox jumps over the lazy dog 0123456789. " * 20
    text = ascii_part + greek + cjk + greek[::-1] + ascii_part
    injector.type_text(text)
    assert recorder.wait_text(text, timeout=30) == text


def test_close_restores_keymap_and_releases(xvfb: XDisplay) -> None:
    d = Display(xvfb.name)
    try:
        count = d.display.info.max_keycode - d.display.info.min_keycode + 1
        before = [list(r) for r in d.get_keyboard_mapping(d.display.info.min_keycode, count)]
        inj = XTestInjector(xvfb.name, xvfb.width, xvfb.height)
        inj.type_text("ЖЗИ")
        inj.key_down("q")
        inj.button_down("right")
        during = [list(r) for r in d.get_keyboard_mapping(d.display.info.min_keycode, count)]
        assert during != before
        inj.close()
        inj.close()  # idempotent
        after = [list(r) for r in d.get_keyboard_mapping(d.display.info.min_keycode, count)]
        assert after == before
        assert keys_down(xvfb.name) == []
        assert not pointer_mask(xvfb.name) & BUTTON_MASKS
        with pytest.raises(InjectorError):
            inj.mouse_move(1, 1)
    finally:
        d.close()


# ---------------------------------------------------------------- healing


def test_release_all_leaves_nothing_down(injector: XTestInjector, xvfb: XDisplay) -> None:
    for key in ("Control", "Shift", "a", "!", "ß", "F13"):
        injector.key_down(key)
    injector.button_down("left")
    injector.button_down("middle")
    assert keys_down(xvfb.name)
    assert pointer_mask(xvfb.name) & BUTTON_MASKS
    injector.release_all()
    assert keys_down(xvfb.name) == []
    assert not pointer_mask(xvfb.name) & BUTTON_MASKS
    assert injector.pressed_keycodes == frozenset()


def test_release_all_sweeps_keys_pressed_behind_our_back(
    injector: XTestInjector, xvfb: XDisplay
) -> None:
    other = Display(xvfb.name)
    try:
        xtest.fake_input(other, X.KeyPress, 38)
        other.sync()
    finally:
        other.close()
    assert keys_down(xvfb.name) == [38]
    injector.release_all()
    assert keys_down(xvfb.name) == []


def test_release_stale_sweeps_old_keys(injector: XTestInjector, xvfb: XDisplay) -> None:
    injector.key_down("x")
    assert injector.release_stale(60.0) == 0
    assert keys_down(xvfb.name)
    time.sleep(0.05)
    assert injector.release_stale(0.01) == 1
    assert keys_down(xvfb.name) == []


# ---------------------------------------------------------------- clipboard


def read_selection(display: str, selection: str, target: str, timeout: float = 5.0
                   ) -> tuple[int, bytes | list[int]] | None:
    """Convert a selection from a separate client, like xclip -o would."""
    d = Display(display)
    try:
        win = d.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
        sel, tgt = d.intern_atom(selection), d.intern_atom(target)
        prop = d.intern_atom("VR_TEST_SELECTION")
        win.convert_selection(sel, tgt, prop, X.CurrentTime)
        d.flush()
        deadline = time.monotonic() + timeout
        while True:
            if not d.pending_events():
                remaining = deadline - time.monotonic()
                assert remaining > 0, "no SelectionNotify"
                select.select([d.fileno()], [], [], remaining)
                continue
            ev = d.next_event()
            if ev.type == X.SelectionNotify:
                if ev.property == X.NONE:
                    return None
                reply = win.get_full_property(prop, X.AnyPropertyType)
                value = reply.value
                return int(reply.property_type), (
                    bytes(value) if isinstance(value, bytes | str) is False and reply.format == 8
                    else value if isinstance(value, bytes) else list(value))
    finally:
        d.close()


def test_set_clipboard_is_readable_by_other_clients(
    injector: XTestInjector, xvfb: XDisplay
) -> None:
    text = "clip ✓ wörld €\nline2"
    injector.set_clipboard(text)
    d = Display(xvfb.name)
    utf8 = d.intern_atom("UTF8_STRING")
    d.close()
    for selection in ("CLIPBOARD", "PRIMARY"):
        got = read_selection(xvfb.name, selection, "UTF8_STRING")
        assert got is not None
        assert got[0] == utf8
        assert got[1] == text.encode("utf-8")
    got = read_selection(xvfb.name, "CLIPBOARD", "STRING")
    assert got is not None and got[1] == text.encode("latin-1", errors="replace")
    targets = read_selection(xvfb.name, "CLIPBOARD", "TARGETS")
    assert targets is not None and utf8 in list(targets[1])  # type: ignore[arg-type]
    assert read_selection(xvfb.name, "CLIPBOARD", "PIXMAP") is None
    injector.set_clipboard("second")
    got = read_selection(xvfb.name, "CLIPBOARD", "UTF8_STRING")
    assert got is not None and got[1] == b"second"


# ---------------------------------------------------------------- xterm


def test_typing_into_real_xterm(
    injector: XTestInjector, xvfb: XDisplay, tmp_path: Path
) -> None:
    binary = shutil.which("xterm")
    if binary is None:
        pytest.fail("xterm is not installed")
    out = tmp_path / "typed.txt"
    env = {**os.environ, "DISPLAY": xvfb.name, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        [binary, "-u8", "-geometry", "80x10+0+0", "-e", "sh", "-c", f"cat > '{out}'"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        d = Display(xvfb.name)
        try:
            deadline = time.monotonic() + 15
            while not _mapped_children(d):
                assert time.monotonic() < deadline, "xterm window never appeared"
                time.sleep(0.05)
        finally:
            d.close()
        # No window manager: focus follows the pointer (PointerRoot).
        injector.mouse_move(100, 50)
        line = "echo Hello, wörld! ✓ € ~/x_y"
        deadline = time.monotonic() + 15
        injector.type_text(line + "\n")
        while out.read_text(encoding="utf-8", errors="replace") != line + "\n":
            assert time.monotonic() < deadline, f"xterm got {out.read_bytes()!r}"
            time.sleep(0.05)
        injector.key_combo("ctrl+d")  # EOF: cat exits, and xterm with it
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _mapped_children(d: Display) -> bool:
    for child in d.screen().root.query_tree().children:
        if child.get_attributes().map_state == X.IsViewable:
            return True
    return False


# ---------------------------------------------------------------- factory


def test_factory_and_errors(xvfb: XDisplay) -> None:
    inj = create_injector("xtest", display=xvfb.name, width=800, height=600)
    try:
        assert isinstance(inj, XTestInjector) and inj.width == 800
    finally:
        inj.close()
    null = create_injector("null", width=640, height=480)
    assert isinstance(null, NullInjector)
    null.mouse_move(1000, -3)
    assert null.cursor_position() == (639, 0)
    with pytest.raises(ValueError):
        create_injector("xtest", width=10, height=10)
    with pytest.raises(ValueError):
        create_injector("vnc", width=10, height=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        XTestInjector(xvfb.name, 0, 10)


def test_unknown_key_raises_value_error(injector: XTestInjector) -> None:
    with pytest.raises(UnknownKeyError):
        injector.key_down("NoSuchKey")
    with pytest.raises(ValueError):
        injector.key_combo("ctrl+nosuchkey")
    with pytest.raises(ValueError):
        injector.button_down("fourth")  # type: ignore[arg-type]
