"""The session's clipboard, owned by the runtime agent.

:class:`SelectionOwner` takes CLIPBOARD and PRIMARY from a hidden window and
answers other clients' selection requests from its own thread, on its own X
connection, so it never contends with input injection.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from typing import Any, Final

from Xlib import X, Xatom
from Xlib import error as xerror
from Xlib.protocol import event as xevent

from .errors import InjectorError
from .xconnect import XConnectError, open_xlib

__all__ = ["CLIPBOARD_TIMEOUT_S", "SelectionOwner"]

logger = logging.getLogger(__name__)

CLIPBOARD_TIMEOUT_S: Final = 5.0


class SelectionOwner:
    """Owns CLIPBOARD and PRIMARY from a hidden window; a thread answers requests.

    The thread has its own X connection, so it never contends with injection.
    Texts larger than one X request (~256 KiB) would need the INCR protocol,
    which is not implemented; callers cap clipboard text at 64 KiB.
    """

    def __init__(self, display: str) -> None:
        try:
            self._d = open_xlib(display)
        except (xerror.DisplayError, xerror.ConnectionClosedError, OSError, XConnectError) as e:
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
