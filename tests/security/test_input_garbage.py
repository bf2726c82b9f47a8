"""Garbage viewer input is dropped, counted by reason, and never hurts the runtime agent.

End to end through the gateway: a real aiortc peer's ``input`` data channel
(WHEP), a real WebSocket on the stream transport, and the noVNC WebSocket's
RFB filter. Each garbage case is sent by a viewer that HOLDS control (so a
valid message would be injected); afterwards the agent's ``/stats`` shows
every case under its reason, ``inputs_applied`` has not moved (nothing reached
X), the peer is still connected and a valid message is applied. A property
test drives the parser with arbitrary text, bytes and JSON values.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_side.inputs import BURST, RateLimiter
from gateway.appkeys import MANAGER
from gateway.http.viewer import MAX_BROWSER_MESSAGE
from tests.gateway_fixtures import Gateway
from tests.security.helpers import run_in_app
from tests.webrtc.whep_client import WhepViewer
from wire.datachannel import (
    DROP_REASONS,
    MAX_MESSAGE_BYTES,
    InputRejected,
    parse_input_message,
)
from wire.errors import ProtocolError

pytestmark = pytest.mark.timeout(180)

# (expected reason, message): text unless bytes.
CASES: list[tuple[str, str | bytes]] = [
    ("not_json", "hello"),
    ("not_json", "{"),
    ("not_json", "{'type': 'mouse_move'}"),
    ("not_json", "[" * 100_000),                       # deeply nested
    ("not_json", '{"type":"mouse_move","x":' + "9" * 5000 + ',"y":1}'),  # 5000-digit int
    ("not_json", ""),
    ("not_utf8", b"\xff\xfe\x00\x01garbage"),
    ("not_object", "[]"),
    ("not_object", "null"),
    ("not_object", "42"),
    ("not_object", '"mouse_move"'),
    ("unknown_type", "{}"),
    ("unknown_type", '{"type":"exec","cmd":"rm -rf /"}'),
    ("unknown_type", '{"type":5}'),
    ("unknown_type", '{"type":["mouse_move"]}'),
    ("unknown_type", '{"type":"keyframe2"}'),
    ("bad_field", '{"type":"mouse_move","x":"10","y":20}'),
    ("bad_field", '{"type":"mouse_move","x":true,"y":20}'),
    ("bad_field", '{"type":"mouse_move","x":null,"y":20}'),
    ("bad_field", '{"type":"mouse_move","x":NaN,"y":20}'),
    ("bad_field", '{"type":"mouse_move","x":Infinity,"y":20}'),
    ("bad_field", '{"type":"mouse_move","x":-Infinity,"y":20}'),
    ("bad_field", '{"type":"mouse_move","x":1e400,"y":20}'),
    ("bad_field", '{"type":"mouse_move","x":99999999,"y":20}'),
    ("bad_field", '{"type":"mouse_move","x":10,"y":-40000}'),
    ("bad_field", '{"type":"mouse_move","x":{"$gt":1},"y":20}'),
    ("bad_field", '{"type":"mouse_down","button":"fourth"}'),
    ("bad_field", '{"type":"mouse_down","button":1}'),
    ("bad_field", '{"type":"mouse_up"}'),
    ("bad_field", '{"type":"scroll","x":1,"y":1,"dx":0,"dy":1000000}'),
    ("bad_field", '{"type":"key_down","key":"NotAKey"}'),
    ("bad_field", '{"type":"key_down","key":""}'),
    ("bad_field", '{"type":"key_up","key":"' + "a" * 100 + '"}'),
    ("bad_field", '{"type":"key_down","key":["a"]}'),
    ("bad_field", '{"type":"text","text":7}'),
    ("bad_field", '{"type":"text","text":"\\ud800"}'),  # lone surrogate
    ("bad_field", json.dumps({"type": "text", "text": "x" * (65 * 1024)})),
    ("bad_field", json.dumps({"type": "clipboard", "text": ["x"]})),
    ("too_large", "x" * (MAX_MESSAGE_BYTES + 1)),
    # 1.5 MiB: over the agent's 1 MiB WebSocket limit, under the gateway's 2 MiB one.
    ("too_large", json.dumps({"type": "text", "text": "y" * (1536 * 1024)})),
]


# ------------------------------------------------------------------ unit


def test_every_case_is_rejected_for_its_reason() -> None:
    for reason, raw in CASES:
        with pytest.raises(InputRejected) as info:
            parse_input_message(raw)
        assert info.value.reason == reason, (raw[:60], info.value)
    assert {reason for reason, _ in CASES} == set(DROP_REASONS) - {"rate_limited"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["mouse_move", "mouse_down", "mouse_up", "scroll", "key_down",
                              "key_up", "text", "clipboard", "keyframe", "other"])},
    optional={k: json_values for k in ("x", "y", "dx", "dy", "button", "key", "text")},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 json_values.map(json.dumps), message_like.map(json.dumps)))
def test_parser_only_ever_rejects_with_a_reason(raw: str | bytes) -> None:
    try:
        message = parse_input_message(raw)
    except InputRejected as e:
        assert e.reason in DROP_REASONS
        return
    except ProtocolError as e:  # pragma: no cover - the failure this test looks for
        raise AssertionError(f"ProtocolError without a reason: {e}") from e
    # Anything accepted is one of the typed messages with sane fields.
    for field in ("x", "y"):
        value = getattr(message, field, 0)
        assert isinstance(value, int) and abs(value) <= 32767


def test_rate_limiter_sheds_a_flood_and_refills() -> None:
    limiter = RateLimiter(rate=100.0, burst=50.0)
    now = 1000.0
    limiter._at = now
    admitted = sum(limiter.take(now) for _ in range(500))
    assert admitted == 50
    assert not limiter.take(now + 0.001)
    assert limiter.take(now + 0.5)  # 0.5 s at 100/s refills 50
    assert sum(limiter.take(now + 0.5) for _ in range(100)) == 49


# ----------------------------------------------------------- end to end


async def _stats(gw: Gateway, sid: str) -> dict[str, Any]:
    manager = gw.extra["app"][MANAGER]
    return await manager.agent(manager.get(sid)).stats()


async def _wait_dropped(gw: Gateway, sid: str, before: dict[str, int], total: int,
                        within: float = 30.0) -> Counter[str]:
    """Poll /stats until *total* more messages were dropped; the per-reason deltas."""
    deadline = time.monotonic() + within
    while True:
        stats = await _stats(gw, sid)
        delta = Counter({k: v - before.get(k, 0) for k, v in stats["input_dropped"].items()})
        delta = +delta
        if sum(delta.values()) >= total:
            return delta
        if time.monotonic() > deadline:
            raise AssertionError(f"only {sum(delta.values())} of {total} drops counted: {delta}")
        await asyncio.sleep(0.1)


async def _take(gw: Gateway, sid: str, token: str) -> None:
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                            json={"action": "take"},
                            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()


async def _cursor(gw: Gateway, sid: str) -> list[int]:
    """The X pointer, asked of the X server itself (from inside the session)."""
    result = await run_in_app(gw, sid, ["xdotool", "getmouselocation", "--shell"])
    assert result.code == 0, result.err
    fields = dict(line.split("=", 1) for line in result.out.split())
    return [int(fields["X"]), int(fields["Y"])]


async def _applied_after(gw: Gateway, sid: str, send: Any, applied: int,
                         within: float = 20.0) -> int:
    """Send a valid message (again, while over the rate) until the agent applies it."""
    deadline = time.monotonic() + within
    while True:
        await send()
        await asyncio.sleep(0.2)
        now = (await _stats(gw, sid))["inputs_applied"]
        if now > applied:
            return int(now)
        assert time.monotonic() < deadline, "a valid message was never applied"


async def _metric_total(gw: Gateway, sid: str) -> float:
    async with gw.http.get(gw.url("/metrics"), headers=gw.auth) as resp:  # per-session series
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("visual_runtime_input_dropped_total{")
               and f'session="{sid}"' in line)


async def test_data_channel_garbage_is_dropped_and_counted(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid, control = session["session_id"], session["tokens"]["control"]
    viewer = WhepViewer(gw, sid, control, with_input=True)
    try:
        await viewer.connect()
        await viewer.wait_channel_open()
        await _take(gw, sid, control)
        # A hostile client ignores the max-message-size the agent advertised (256 KiB).
        viewer.pc.sctp._remote_max_message_size = 0
        before = await _stats(gw, sid)
        cursor = await _cursor(gw, sid)
        # Messages over the data-channel limit (256 KiB + one fragment) close the peer
        # before they are reassembled (agent_side/sctpguard.py): sent last, below.
        small = [(r, m) for r, m in CASES if len(m) <= 1024 * 1024]
        big = [(r, m) for r, m in CASES if len(m) > 1024 * 1024]
        for _, raw in small:
            viewer._channel.send(raw)
        expected = Counter(reason for reason, _ in small)
        assert await _wait_dropped(gw, sid, before["input_dropped"], len(small)) == expected
        after = await _stats(gw, sid)
        assert after["inputs_applied"] == before["inputs_applied"]  # nothing reached X
        assert await _cursor(gw, sid) == cursor
        assert viewer.pc.connectionState == "connected"
        assert after["viewers_by_transport"]["webrtc"] == 1

        # A flood (thousands of messages at once): shed by the rate limit, all counted.
        # (aiortc's SCTP delivers a few hundred per second here; the stream WebSocket
        # test below floods faster than the limit.)
        flood = 2000
        before = after
        for i in range(flood):
            viewer._channel.send(json.dumps({"type": "mouse_move", "x": str(i)}))
        delta = await _wait_dropped(gw, sid, before["input_dropped"], flood, within=60)
        assert sum(delta.values()) == flood
        print(f"data channel: {len(CASES)} garbage cases, flood of {flood}: {dict(delta)}")
        assert set(delta) <= {"bad_field", "rate_limited"}
        assert delta["bad_field"] <= BURST + 60 * 500  # never more than the bucket admits

        # The agent and the peer are fine; a valid message is applied.
        applied = await _applied_after(
            gw, sid, lambda: _send_dc(viewer, {"type": "mouse_move", "x": 123, "y": 77}),
            before["inputs_applied"])
        assert applied > before["inputs_applied"]
        assert await _cursor(gw, sid) == [123, 77]
        assert viewer.pc.connectionState == "connected"
        assert await _metric_total(gw, sid) >= len(small) + flood

        # 1.5 MiB on the data channel: the peer is closed, nothing is applied.
        assert big
        viewer._channel.send(big[0][1])
        deadline = time.monotonic() + 60
        while (stats := await _stats(gw, sid))["limits"]["closed"]["datachannel_oversize"] < 1:
            assert time.monotonic() < deadline, "the oversize message did not close the peer"
            await asyncio.sleep(0.2)
        assert stats["viewers_by_transport"]["webrtc"] == 0
        assert stats["inputs_applied"] == applied
    finally:
        await viewer.close()
    await gw.stop(sid)


async def _send_dc(viewer: WhepViewer, message: dict[str, Any]) -> None:
    viewer.send(message)


async def test_websocket_garbage_is_dropped_and_counted(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid, control = session["session_id"], session["tokens"]["control"]
    await _take(gw, sid, control)
    url = gw.url(f"/sessions/{sid}/stream")
    headers = {"Authorization": f"Bearer {control}"}
    before = await _stats(gw, sid)
    cursor = await _cursor(gw, sid)
    big = [(r, m) for r, m in CASES if len(m) > 1024 * 1024]
    small = [(r, m) for r, m in CASES if len(m) <= 1024 * 1024]
    async with gw.http.ws_connect(url, headers=headers, max_msg_size=0) as ws:
        for _, raw in small:
            if isinstance(raw, bytes):
                await ws.send_bytes(raw)
            else:
                await ws.send_str(raw)
        delta = await _wait_dropped(gw, sid, before["input_dropped"], len(small))
        assert delta == Counter(reason for reason, _ in small)
        # Binary frames that are not UTF-8 JSON, too.
        await ws.send_bytes(b"\x00" * 100)
        await _wait_dropped(gw, sid, before["input_dropped"], len(small) + 1)
        after = await _stats(gw, sid)
        assert after["inputs_applied"] == before["inputs_applied"]
        assert await _cursor(gw, sid) == cursor

        # A flood far over the rate: shed, all counted, keyframe requests included.
        flood = 5000
        mark = await _stats(gw, sid)
        for i in range(flood):
            await ws.send_str('{"type":"keyframe"}' if i % 2 else '{"type":"nope"}')
        delta = await _wait_dropped(gw, sid, mark["input_dropped"], flood // 2, within=60)
        print(f"websocket: {len(small) + 1} garbage cases, flood of {flood}: {dict(delta)}")
        assert delta["rate_limited"] > 0, delta
        assert set(delta) <= {"unknown_type", "rate_limited"}

        async def valid() -> None:
            await ws.send_str(json.dumps({"type": "mouse_move", "x": 200, "y": 150}))
        await _applied_after(gw, sid, valid, after["inputs_applied"])
        assert await _cursor(gw, sid) == [200, 150]
        # Over the agent's 1 MiB frame limit: the socket is closed (1009), and counted.
        mark = await _stats(gw, sid)
        await ws.send_str(big[0][1])  # type: ignore[arg-type]
        msg = await ws.receive(timeout=30)
        while msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            msg = await ws.receive(timeout=30)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING), msg
    delta = await _wait_dropped(gw, sid, mark["input_dropped"], 1)
    assert delta == Counter({"too_large": 1})
    # Over the gateway's own limit: closed there (1009); the agent never sees it.
    mark = await _stats(gw, sid)
    async with gw.http.ws_connect(url, headers=headers) as ws:
        await ws.send_str("z" * (MAX_BROWSER_MESSAGE + 1))
        msg = await ws.receive(timeout=30)
        while msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            msg = await ws.receive(timeout=30)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING), msg
        assert ws.close_code == 1009, ws.close_code
    assert (await _stats(gw, sid))["input_dropped"] == mark["input_dropped"]
    # The agent is fine: a new viewer connects and its input is applied.
    async with gw.http.ws_connect(url, headers=headers) as ws:
        async def valid2() -> None:
            await ws.send_str(json.dumps({"type": "mouse_move", "x": 10, "y": 11}))
        applied = (await _stats(gw, sid))["inputs_applied"]
        await _applied_after(gw, sid, valid2, applied)
    assert await _cursor(gw, sid) == [10, 11]
    await gw.stop(sid)


def _rfb_handshake() -> bytes:
    # ProtocolVersion, security type None, ClientInit(shared)
    return b"RFB 003.008\n" + b"\x01" + b"\x01"


async def _rfb_connect(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    """Speak the RFB handshake; returns the ServerInit bytes."""
    got = b""

    async def need(n: int) -> bytes:
        nonlocal got
        while len(got) < n:
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            got += msg.data
        out, got = got[:n], got[n:]
        return out

    assert (await need(12)).startswith(b"RFB 003.")
    await ws.send_bytes(b"RFB 003.008\n")
    count = (await need(1))[0]
    assert 1 in await need(count)
    await ws.send_bytes(b"\x01")
    assert await need(4) == b"\x00\x00\x00\x00"
    await ws.send_bytes(b"\x01")
    head = await need(24)
    name_len = int.from_bytes(head[20:24], "big")
    return head + await need(name_len)


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            return msg


async def test_vnc_garbage_closes_only_that_viewer_and_is_counted(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    view, control = session["tokens"]["view"], session["tokens"]["control"]
    url = gw.url(f"/sessions/{sid}/vnc/websockify")
    cases = {
        "unknown_type": bytes([99]) + b"\x00" * 40,
        "huge_clipboard": b"\x06\x00\x00\x00" + (100 * 1024 * 1024).to_bytes(4, "big") + b"x" * 64,
        "bad_security": b"\x02",  # in place of security type None
    }
    for name, garbage in cases.items():
        async with gw.http.ws_connect(url, protocols=("binary",),
                                      headers={"Authorization": f"Bearer {control}"}) as ws:
            if name == "bad_security":
                await ws.send_bytes(b"RFB 003.008\n" + garbage)
            else:
                await _rfb_connect(ws)
                await ws.send_bytes(garbage)
            msg = await _closed(ws)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (name, msg)
    stats = await _stats(gw, sid)
    assert stats["vnc_protocol_errors"] == len(cases)
    # A view token's pointer and key events are refused, counted, never injected.
    applied = stats["inputs_applied"]
    cursor = await _cursor(gw, sid)
    async with gw.http.ws_connect(url, protocols=("binary",),
                                  headers={"Authorization": f"Bearer {view}"}) as ws:
        server_init = await _rfb_connect(ws)
        assert int.from_bytes(server_init[0:2], "big") == 640
        for i in range(50):
            await ws.send_bytes(b"\x05\x00" + (300 + i).to_bytes(2, "big") + (200).to_bytes(2, "big"))
            await ws.send_bytes(b"\x04\x01\x00\x00" + (0x61).to_bytes(4, "big"))
        await ws.send_bytes(b"\x03\x00" + b"\x00" * 8)  # a (harmless) update request passes
    deadline = time.monotonic() + 20
    while (stats := await _stats(gw, sid))["vnc_input_refused"] < 100:
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.1)
    assert stats["vnc_input_refused"] == 100
    print(f"vnc: {len(cases)} protocol errors, {stats['vnc_input_refused']} refused; "
          f"agent input_dropped {stats['input_dropped']}")
    assert stats["inputs_applied"] == applied and await _cursor(gw, sid) == cursor
    # The agent is fine: a fresh VNC viewer completes the handshake.
    async with gw.http.ws_connect(url, protocols=("binary",),
                                  headers={"Authorization": f"Bearer {control}"}) as ws:
        await _rfb_connect(ws)
    assert (await gw.get(sid))["status"] == "running"
    await gw.stop(sid)
