"""The noVNC input filter pins the RFB handshake; nothing a viewer without control sends
reaches the desktop, whatever version string it claims and however it splits its bytes.

The finding (issue 20): libvncserver treats every ``RFB 003.00x`` with x < 7 as
3.3, the filter only knew ``003.003``; a client saying ``003.006`` put the
filter one byte out of step with x11vnc, and a pointer event hidden in what
the filter took for SetPixelFormat moved the pointer, for a view token and for
a control token that had not taken control.

Three layers of tests:

* a property test of the filter against a model of libvncserver 0.9.14's
  parser (``rfb_model.py``): every version form, every message mix, every
  split — the bytes the filter forwards never hold an input message x11vnc
  would act on;
* the same against a live x11vnc on a real Xvfb, exactly as the bridge feeds
  it (one ``feed`` per WebSocket frame): the X pointer (XQueryPointer) does
  not move, no key or button event reaches a focused X window and the
  selections keep their owner. A positive control with a filter that allows
  input shows this harness does see injected input;
* end to end through the gateway: the reviewer's ``003.006`` stream, with view
  and control tokens, in one frame and one byte per frame, is refused.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from Xlib import X, Xatom
from Xlib.display import Display

from agent_side.vnc import RFB_VERSIONS, RfbInputFilter, RfbProtocolError, VncServer
from gateway.appkeys import MANAGER
from tests.conftest import start_xvfb, stop_xvfb
from tests.gateway_fixtures import Gateway
from tests.security.helpers import run_in_app
from tests.security.rfb_model import EXT_CLIPBOARD, libvnc_inputs, sscanf_version

pytestmark = pytest.mark.timeout(600)
T = TypeVar("T")

POINTER = b"\x05\x01\x00\x7b\x00\x4d"  # button 1 down at (123, 77)
POINTER_UP = b"\x05\x00\x00\x7b\x00\x4d"
KEY_A = b"\x04\x01\x00\x00\x00\x00\x00\x61"  # 'a' down
KEY_A_UP = b"\x04\x00\x00\x00\x00\x00\x00\x61"
CUT = b"\x06\x00\x00\x00\x00\x00\x00\x05pwned"
XVP = b"\xfa\x00\x01\x02"
HARMLESS = [
    b"\x03\x01\x00\x00\x00\x00\x00\x01\x00\x01",             # FramebufferUpdateRequest 1x1
    b"\x02\x00\x00\x00",                                     # SetEncodings (none)
    b"\x02\x00\x00\x01" + EXT_CLIPBOARD.to_bytes(4, "big"),  # ... extended clipboard
    b"\x00" * 4 + bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0]) + b"\x00" * 3,
]
INPUTS = [POINTER, POINTER_UP, KEY_A, KEY_A_UP, CUT, XVP,
          b"\x06\x00\x00\x00\xff\xff\xff\xfb" + b"\x00\x00\x00\x02x",  # extended (negative)
          b"\xff\x00\x00\x01\x00\x00\x00\x61\x00\x00\x00\x1e"]       # QEMU extended key
SMUGGLE = (b"RFB 003.006\n" + b"\x01"  # filter: security type None; x11vnc: ClientInit
           + b"\x05"                   # filter: ClientInit; x11vnc: a PointerEvent ...
           + b"\x02\x00\x01\x00\x4d"   # ... middle button down at (1, 77); filter: SetEncodings
           + b"\x02\x00\x00\x00" * 255 + b"\x02\x00\x00")  # of 256 (x11vnc: 255 SetEncodings)
"""The reviewer's trick: with the old filter x11vnc moves the pointer to (1, 77)."""
SMUGGLED_TO = [1, 77]

VERSION_FORMS = [
    *RFB_VERSIONS,
    b"RFB 003.006\n", b"RFB 003.005\n", b"RFB 003.004\n", b"RFB 003.000\n", b"RFB 003.002\n",
    b"RFB 003.009\n", b"RFB 003.014\n", b"RFB 003.016\n", b"RFB 003.889\n", b"RFB 003.999\n",
    b"RFB 004.000\n", b"RFB 002.008\n", b"RFB 003.-01\n", b"RFB +03.008\n", b"RFB  03.008\n",
    b"RFB 3.8    \n", b"RFB 3.6\n\n\n\n\n", b"RFB003.008\n\n", b"RFB 003.03\n\n", b"RFB 003.008\0",
    b"RFB 003.008 ", b"RFB 003.0080", b"rfb 003.008\n", b"RFB 003,008\n", b"\0" * 12,
]


def _digits() -> st.SearchStrategy[bytes]:
    return st.one_of(st.integers(-99, 999).map(lambda n: str(n).encode()),
                     st.sampled_from([b"003", b"03", b"3", b"+3", b"-0", b"", b"00", b"0003"]))


version_strings = st.one_of(
    st.sampled_from(VERSION_FORMS),
    st.builds(lambda ws1, major, minor, tail: (b"RFB" + ws1 + major + b"." + minor + tail
                                              + b"\n" * 12)[:12],
              st.sampled_from([b" ", b"", b"  ", b"\t"]), _digits(), _digits(),
              st.sampled_from([b"", b" ", b"\0", b"x"])),
    st.binary(min_size=12, max_size=12),
)
units = st.one_of(st.sampled_from([b"\x01", b"\x00", b"\x02", *HARMLESS, *INPUTS]),
                  st.binary(max_size=24))


@st.composite
def client_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A client's whole stream and its split into WebSocket frames."""
    stream = draw(version_strings) + b"".join(draw(st.lists(units, max_size=12)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=8))))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def forwarded(frames: list[bytes], allowed: bool) -> tuple[bytes, bool]:
    """What the filter writes to x11vnc for *frames*, and whether it refused the stream."""
    rfb = RfbInputFilter(lambda: allowed)
    out = b""
    try:
        for frame in frames:
            out += rfb.feed(frame)
    except RfbProtocolError:
        return out, True
    return out, False


# ------------------------------------------------------------------ model


def test_the_model_sees_what_the_reviewer_saw() -> None:
    """Not vacuous: the model finds the smuggled pointer, and input in a plain 3.8 stream."""
    assert sscanf_version(b"RFB 003.006\n") == (3, 6)
    assert sscanf_version(b"RFB  +3.8   ") == (3, 8)
    assert [i.kind for i in libvnc_inputs(SMUGGLE)] == ["pointer"]
    plain = b"RFB 003.008\n\x01\x01" + POINTER + KEY_A + CUT
    assert [i.kind for i in libvnc_inputs(plain)] == ["pointer", "key", "cut_text"]
    assert [i.kind for i in libvnc_inputs(forwarded([plain], allowed=True)[0])] == [
        "pointer", "key", "cut_text"]
    assert libvnc_inputs(forwarded([plain], allowed=False)[0]) == []


def test_only_the_pinned_versions_pass() -> None:
    for version in VERSION_FORMS:
        out, refused = forwarded([version + b"\x01"], allowed=False)
        if version in RFB_VERSIONS:
            assert not refused and out.startswith(version), version
        else:
            assert refused and out == b"", version  # x11vnc never sees a byte of it


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_streams())
@example((SMUGGLE, [SMUGGLE]))
@example((SMUGGLE, [bytes([b]) for b in SMUGGLE]))
@example((b"RFB 003.889\n\x01" + POINTER, [b"RFB 003.889\n\x01" + POINTER]))
def test_filter_never_forwards_input_x11vnc_would_act_on(case: tuple[bytes, list[bytes]]) -> None:
    stream, frames = case
    out, refused = forwarded(frames, allowed=False)
    assert libvnc_inputs(out) == [], (stream, out)
    whole, refused_whole = forwarded([stream], allowed=False)
    assert refused_whole == refused
    if not refused:  # the split never changes what an accepted stream forwards
        assert whole == out
        assert libvnc_inputs(forwarded(frames, allowed=True)[0]) == libvnc_inputs(stream)


# ------------------------------------------------------------ live x11vnc


class LoopThread:
    """An event loop in a thread, so hypothesis (sync) can drive asyncio x11vnc servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Desk:
    display: Display
    window: Any
    servers: dict[str, VncServer]
    """"control": the x11vnc control tokens use; "view": the ``-viewonly -nosel`` one."""
    loop: LoopThread
    start: tuple[int, int] = (5, 5)

    def reset(self) -> None:
        root = self.display.screen().root
        root.warp_pointer(*self.start)
        self.window.set_input_focus(X.RevertToParent, X.CurrentTime)
        self.display.sync()
        self.drain()

    def drain(self) -> list[int]:
        """Key and button events the focused window got since the last call."""
        self.display.sync()
        kinds = []
        while self.display.pending_events():
            event = self.display.next_event()
            if event.type in (X.KeyPress, X.KeyRelease, X.ButtonPress, X.ButtonRelease):
                kinds.append(event.type)
        return kinds

    def pointer(self) -> tuple[int, int]:
        reply = self.display.screen().root.query_pointer()
        return reply.root_x, reply.root_y

    def owners(self) -> tuple[Any, ...]:
        """The selections' owners and the root's CUT_BUFFER0 (where x11vnc puts pasted text)."""
        clipboard = self.display.intern_atom("CLIPBOARD")
        cut = self.display.screen().root.get_full_property(Xatom.CUT_BUFFER0, X.AnyPropertyType)
        return (*(getattr(owner, "id", owner) for owner in (
            self.display.get_selection_owner(Xatom.PRIMARY),
            self.display.get_selection_owner(clipboard))), cut.value if cut else None)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    xvfb = start_xvfb(640, 480)
    folder = tmp_path_factory.mktemp("vnc")
    loop = LoopThread()
    servers = {"control": VncServer(xvfb.name, folder / "vnc.sock", "test"),
               "view": VncServer(xvfb.name, folder / "vnc-view.sock", "test", view_only=True)}
    display = Display(xvfb.name)
    window = display.screen().root.create_window(
        0, 0, 640, 480, 0, X.CopyFromParent, X.InputOutput, X.CopyFromParent,
        override_redirect=True,
        event_mask=X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask | X.ButtonReleaseMask)
    window.map()
    try:
        for server in servers.values():
            loop.run(server.ensure_started())
        yield Desk(display, window, servers, loop)
    finally:
        for server in servers.values():
            loop.run(server.aclose())
        loop.close()
        display.close()
        stop_xvfb(xvfb)


async def _drive(socket: Path, frames: list[bytes], allowed: bool) -> bool:
    """Feed *frames* through a fresh filter to x11vnc, one ``feed`` per WebSocket frame as
    the bridge does; True if the filter refused the stream. Returns once x11vnc has
    closed the connection after our EOF, i.e. has read and acted on every byte."""
    reader, writer = await asyncio.open_unix_connection(str(socket))

    async def drain() -> None:
        while await reader.read(1 << 16):
            pass

    drainer = asyncio.create_task(drain())
    rfb = RfbInputFilter(lambda: allowed)
    refused = False
    try:
        for frame in frames:
            out = rfb.feed(frame)
            if out:
                writer.write(out)
                await writer.drain()
    except RfbProtocolError:
        refused = True
    writer.write_eof()
    await asyncio.wait_for(drainer, 30)
    writer.close()
    await writer.wait_closed()
    return refused


def _settled(desk: Desk, server: str, frames: list[bytes], allowed: bool) -> bool:
    refused = desk.loop.run(_drive(desk.servers[server].socket_path, frames, allowed))
    # One more full round trip on the same x11vnc: its main loop has flushed every X
    # request the previous client caused before it answers a new client's handshake.
    desk.loop.run(_drive(desk.servers[server].socket_path,
                         [b"RFB 003.008\n\x01\x01" + HARMLESS[0]], False))
    return refused


def test_live_harness_sees_injected_input(desk: Desk) -> None:
    """Positive control: a filter that allows input lets x11vnc move, click, type and paste."""
    desk.reset()
    owners = desk.owners()
    stream = b"RFB 003.008\n\x01\x01" + POINTER + POINTER_UP + KEY_A + KEY_A_UP + CUT
    assert not _settled(desk, "control", [stream], allowed=True)
    assert desk.pointer() == (123, 77)
    assert X.KeyPress in desk.drain()
    assert desk.owners() != owners
    # The view-only x11vnc ignores input even when the filter lets it through.
    desk.reset()
    owners = desk.owners()
    assert not _settled(desk, "view", [stream], allowed=True)
    assert desk.pointer() == desk.start and desk.drain() == [] and desk.owners() == owners


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(client_streams(), st.sampled_from(["view", "control"]))
@example((SMUGGLE, [SMUGGLE]), "control")
@example((SMUGGLE, [bytes([b]) for b in SMUGGLE]), "view")
def test_live_x11vnc_gets_no_input_without_control(desk: Desk, case: tuple[bytes, list[bytes]],
                                                   kind: str) -> None:
    """A view token, or a control token that did not take control: nothing reaches X."""
    _, frames = case
    desk.reset()
    owners = desk.owners()
    _settled(desk, kind, frames, allowed=False)
    assert desk.pointer() == desk.start
    assert desk.drain() == []
    assert desk.owners() == owners


# -------------------------------------------------------------- end to end


async def test_version_smuggling_is_refused_through_the_gateway(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    manager = gw.extra["app"][MANAGER]
    url = gw.url(f"/sessions/{sid}/vnc/websockify")

    async def cursor() -> list[int]:
        result = await run_in_app(gw, sid, ["xdotool", "getmouselocation", "--shell"])
        assert result.code == 0, result.err
        fields = dict(line.split("=", 1) for line in result.out.split())
        return [int(fields["X"]), int(fields["Y"])]

    start = await cursor()
    assert start != SMUGGLED_TO
    errors = (await manager.agent(manager.get(sid)).stats())["vnc_protocol_errors"]
    for kind in ("view", "control"):
        for frames in ([SMUGGLE], [bytes([b]) for b in SMUGGLE]):
            headers = {"Authorization": f"Bearer {session['tokens'][kind]}"}
            async with gw.http.ws_connect(url, protocols=("binary",), headers=headers) as ws:
                for frame in frames:
                    if ws.closed:
                        break
                    await ws.send_bytes(frame)
                assert await cursor() == start, (kind, len(frames))
                deadline = time.monotonic() + 30
                while True:  # the agent closes the socket: the filter refused the version
                    msg = await ws.receive(timeout=30)
                    if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                        break
                    assert time.monotonic() < deadline
            assert await cursor() == start, (kind, len(frames))
            errors += 1
            stats = await manager.agent(manager.get(sid)).stats()
            assert stats["vnc_protocol_errors"] == errors, (kind, len(frames), stats)
    await gw.stop(sid)


async def _cut_texts(socket: Path, got: list[bytes], ready: asyncio.Event) -> None:
    """A 3.8 client that only listens: the ServerCutText messages x11vnc sends it."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        await reader.readexactly(12)
        writer.write(b"RFB 003.008\n")
        count = (await reader.readexactly(1))[0]
        await reader.readexactly(count)
        writer.write(b"\x01")
        await reader.readexactly(4)
        writer.write(b"\x01")
        head = await reader.readexactly(24)
        await reader.readexactly(int.from_bytes(head[20:24], "big"))
        ready.set()
        while True:  # no update requests: only unsolicited messages arrive
            kind = (await reader.readexactly(1))[0]
            if kind == 3:  # ServerCutText
                head = await reader.readexactly(7)
                got.append(await reader.readexactly(int.from_bytes(head[3:7], "big")))
            elif kind == 2:  # Bell
                continue
            else:
                raise AssertionError(f"unexpected server message {kind}")
    finally:
        writer.close()


def test_view_only_viewers_never_get_the_clipboard(desk: Desk) -> None:
    """The session's clipboard (a password a human pastes) reaches control viewers'
    x11vnc, never the ``-nosel`` one view tokens are connected to."""
    secret = b"pasted-password-" + os.urandom(4).hex().encode()
    got: dict[str, list[bytes]] = {"control": [], "view": []}

    async def run() -> None:
        readers = []
        for kind in ("control", "view"):
            ready = asyncio.Event()
            readers.append(asyncio.create_task(
                _cut_texts(desk.servers[kind].socket_path, got[kind], ready)))
            await asyncio.wait_for(ready.wait(), 20)
        try:
            for _ in range(200):  # x11vnc polls: set it until the control viewer sees it
                await asyncio.to_thread(_set_cut_buffer, desk, secret)
                await asyncio.sleep(0.1)
                if secret in got["control"]:
                    break
            assert secret in got["control"], got  # positive control
            await asyncio.sleep(3)  # the same chance again for the view-only x11vnc
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    desk.loop.run(run(), timeout=120)
    assert got["view"] == [], got


def _set_cut_buffer(desk: Desk, text: bytes) -> None:
    desk.display.screen().root.change_property(Xatom.CUT_BUFFER0, Xatom.STRING, 8, text)
    desk.display.sync()
