"""The load benchmark's hostile viewer: everything one view token may do, at once.

Run as its own process (``python -m benchmarks.load_attacker --base URL --session SID
--token VIEW --seconds S``; :mod:`benchmarks.load_hostile` starts it), so its work
does not starve the honest viewer's event loop in the benchmark process. Against one
session, through the gateway, with one view token, for *seconds*:

* **WHEP peers on a poor link** (``--lossy``, default 2): real aiortc peers that
  connect, keep a 4 KiB UDP receive buffer (most packets are lost), never decode,
  and send a REMB of 10 kbit/s every 0.5 s and a PLI every 0.2 s;
* **a data-channel peer**: opens the ``input`` channel and sends messages of
  64 KiB and 256 KiB (at the agent's guard), then one of 4 MiB (over it); once its
  peer is closed it offers again;
* **slow WebSocket viewers** (``--slow-ws``, default 2): raw sockets to
  ``/sessions/{id}/stream`` with a 4 KiB receive buffer, reading 1 KiB every 0.5 s;
  when cut off they connect again;
* **a noVNC client**: RFB over ``/sessions/{id}/vnc/websockify`` asking for
  updates continuously (noVNC's loop), reading everything;
* **an offer flood**: 200 WHEP offers without ICE candidates (ghost peers if
  admitted), in four bursts of 50 across the window.

Prints one JSON object: HTTP statuses by kind of attempt and what each part saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.vncclient import RfbClient  # noqa: E402

REMB_BPS = 10_000
"""The bandwidth the lossy peers claim (10 kbit/s: a lie, or a very poor link)."""
DATACHANNEL_SIZES = (64 * 1024, 256 * 1024, 4 * 1024 * 1024)
"""Input-channel messages: under, at and over the agent's 256 KiB guard."""
FLOOD_OFFERS, FLOOD_BURSTS = 200, 4


class Tally:
    """Statuses and notes of one attack, by part."""

    def __init__(self) -> None:
        self.status: dict[str, Counter[str]] = {}
        self.notes: Counter[str] = Counter()

    def saw(self, part: str, status: int | str) -> None:
        self.status.setdefault(part, Counter())[str(status)] += 1

    def to_json(self) -> dict[str, Any]:
        return {"status": {k: dict(v) for k, v in self.status.items()}, "notes": dict(self.notes)}


async def _offer(http: aiohttp.ClientSession, base: str, sid: str, token: str,
                 sdp: str) -> tuple[int, str]:
    async with http.post(f"{base}/api/visual-sessions/{sid}/whep", data=sdp,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/sdp"},
                         timeout=aiohttp.ClientTimeout(total=60)) as resp:
        return resp.status, await resp.text()


def _h264_only(pc: RTCPeerConnection) -> Any:
    transceiver = pc.addTransceiver("video", direction="recvonly")
    capabilities = RTCRtpReceiver.getCapabilities("video")
    caps = capabilities.codecs if capabilities is not None else []
    transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == "video/h264"
                                     and str(c.parameters.get("packetization-mode")) == "1"])
    return transceiver


def _shrink_receive_buffers(pc: RTCPeerConnection, size: int = 4096) -> None:
    """A poor link: a tiny UDP receive buffer (aioice internals; best effort)."""
    for transceiver in pc.getTransceivers():
        ice = getattr(transceiver.receiver.transport, "transport", None)
        for protocol in getattr(getattr(ice, "_connection", None), "_protocols", []):
            transport = getattr(protocol, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class _NoDecode:
    """A jitter buffer that drops every packet (the attacker does not decode)."""

    packets = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        _NoDecode.packets += 1
        return False, None

    def remove(self, count: int) -> None:
        pass


async def lossy_peer(http: aiohttp.ClientSession, base: str, sid: str, token: str,
                     until: float, tally: Tally) -> None:
    """A WHEP peer on a poor link that claims 10 kbit/s and asks for keyframes."""
    pc = RTCPeerConnection()
    transceiver = _h264_only(pc)
    receiver = transceiver.receiver
    receiver._RTCRtpReceiver__jitter_buffer = _NoDecode()
    try:
        await pc.setLocalDescription(await pc.createOffer())
        status, answer = await _offer(http, base, sid, token, pc.localDescription.sdp)
        tally.saw("lossy_peer", status)
        if status != 201:
            return
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        _shrink_receive_buffers(pc)
        last_remb = 0.0
        while time.monotonic() < until and pc.connectionState not in ("failed", "closed"):
            await asyncio.sleep(0.2)
            ssrc = None
            with contextlib.suppress(Exception):
                for stats in (await pc.getStats()).values():
                    if getattr(stats, "type", "") == "inbound-rtp":
                        ssrc = int(stats.ssrc)
            rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
            if ssrc is None or rtcp_ssrc is None:
                continue
            with contextlib.suppress(ConnectionError):
                await receiver._send_rtcp_pli(ssrc)
                tally.notes["pli_sent"] += 1
                if time.monotonic() - last_remb >= 0.5:
                    last_remb = time.monotonic()
                    await receiver._send_rtcp(RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                        fci=pack_remb_fci(REMB_BPS, [ssrc])))
                    tally.notes["remb_sent"] += 1
        tally.notes[f"lossy_peer_end_{pc.connectionState}"] += 1
    finally:
        await pc.close()


def _closed_event(pc: RTCPeerConnection, channel: Any) -> asyncio.Event:
    """Set when *channel* closes or *pc* fails or closes."""
    closed = asyncio.Event()
    channel.on("close", closed.set)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            closed.set()

    return closed


async def datachannel_peer(http: aiohttp.ClientSession, base: str, sid: str, token: str,
                           until: float, tally: Tally) -> None:
    """Input-channel messages up to and over the guard; offers again once closed."""
    while time.monotonic() < until:
        pc = RTCPeerConnection()
        _h264_only(pc).receiver._RTCRtpReceiver__jitter_buffer = _NoDecode()
        channel = pc.createDataChannel("input")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        try:
            await pc.setLocalDescription(await pc.createOffer())
            status, answer = await _offer(http, base, sid, token, pc.localDescription.sdp)
            tally.saw("datachannel_peer", status)
            if status != 201:
                await asyncio.sleep(2.0)
                continue
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(opened.wait(), max(0.1, until - time.monotonic()))
            if not opened.is_set() or pc.sctp is None:
                continue
            pc.sctp._remote_max_message_size = 0  # lift aiortc's own client-side check
            for size in DATACHANNEL_SIZES:
                if channel.readyState != "open":
                    break
                channel.send(b"\x00" * size)
                tally.notes[f"datachannel_sent_{size}"] += 1
                await asyncio.sleep(0.5)
            closed = _closed_event(pc, channel)
            if channel.readyState == "open" and pc.connectionState not in ("failed", "closed"):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), max(0.1, until - time.monotonic()))
            if time.monotonic() < until:
                tally.notes["datachannel_peer_closed_by_agent"] += 1
        finally:
            await pc.close()


def _slow_socket(base: str, sid: str, token: str) -> tuple[socket.socket, int]:
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall((f"GET /sessions/{sid}/stream?token={token} HTTP/1.1\r\n"
                  f"Host: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    status = re.match(rb"HTTP/1\.1 (\d+)", head)
    sock.settimeout(0)
    return sock, int(status.group(1)) if status else 0


async def slow_websocket(base: str, sid: str, token: str, until: float, tally: Tally) -> None:
    """A WebSocket viewer that reads 1 KiB every 0.5 s; connects again when cut off."""
    while time.monotonic() < until:
        try:
            sock, status = await asyncio.to_thread(_slow_socket, base, sid, token)
        except OSError as e:
            tally.saw("slow_ws", type(e).__name__)
            await asyncio.sleep(1.0)
            continue
        tally.saw("slow_ws", status)
        try:
            if status != 101:
                await asyncio.sleep(2.0)
                continue
            while time.monotonic() < until:
                await asyncio.sleep(0.5)
                try:
                    if not sock.recv(1024):
                        tally.notes["slow_ws_cut_off"] += 1
                        break
                except BlockingIOError:
                    continue
                except OSError:
                    tally.notes["slow_ws_cut_off"] += 1
                    break
        finally:
            sock.close()


class _WsWriter:
    """What :class:`RfbClient` writes to, sent at once (in order) as binary WebSocket
    messages: the handshake writes without draining."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending = bytearray()
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            data, self.pending = bytes(self.pending), bytearray()
            if data:
                await self.ws.send_bytes(data)

    def write(self, data: bytes) -> None:
        self.pending += data
        self._ready.set()

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._task, return_exceptions=True)
        await self.ws.close()


async def novnc(http: aiohttp.ClientSession, base: str, sid: str, token: str, until: float,
                tally: Tally) -> None:
    """A noVNC viewer: RFB over the WebSocket, updates asked for continuously."""
    try:
        ws = await http.ws_connect(f"{base}/sessions/{sid}/vnc/websockify?token={token}",
                                   protocols=("binary",), max_msg_size=0)
    except aiohttp.WSServerHandshakeError as e:
        tally.saw("novnc", e.status)
        return
    tally.saw("novnc", 101)
    reader = asyncio.StreamReader(limit=2**24)

    async def pump() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                reader.feed_data(msg.data)
        reader.feed_eof()

    feeder = asyncio.create_task(pump())
    client = RfbClient()
    try:
        await client.start(reader, _WsWriter(ws))  # type: ignore[arg-type]
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        tally.notes["novnc_updates"] += client.updates
        tally.notes["novnc_bytes"] += client.bytes
    except Exception as e:  # noqa: BLE001 - reported, the other parts go on
        tally.saw("novnc", type(e).__name__)
    finally:
        # the feeder first: the WebSocket's close handshake must not race its reads
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.aclose(), 5)


async def flood(http: aiohttp.ClientSession, base: str, sid: str, token: str, seconds: float,
                tally: Tally) -> None:
    """200 offers without candidates, in bursts across the window."""
    pc = RTCPeerConnection()
    _h264_only(pc)
    pc.createDataChannel("input")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = re.sub(r"a=(candidate:[^\r\n]*|end-of-candidates)\r\n", "", pc.localDescription.sdp)
    await pc.close()
    per_burst = FLOOD_OFFERS // FLOOD_BURSTS
    for burst in range(FLOOD_BURSTS):
        replies = await asyncio.gather(*(_offer(http, base, sid, token, sdp)
                                         for _ in range(per_burst)), return_exceptions=True)
        for reply in replies:
            tally.saw("flood_offer", reply[0] if isinstance(reply, tuple)
                      else type(reply).__name__)
        if burst < FLOOD_BURSTS - 1:
            await asyncio.sleep(seconds / FLOOD_BURSTS)


async def attack(base: str, sid: str, token: str, seconds: float, lossy: int = 2,
                 slow_ws: int = 2, signal_start: bool = False) -> dict[str, Any]:
    """Every part at once for *seconds* (see the module docstring); *signal_start* prints
    ``started`` when it begins (after the imports, which take a second or two)."""
    tally = Tally()
    if signal_start:
        print("started", flush=True)
    t0 = time.monotonic()
    until = t0 + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        parts = {**{f"lossy_peer{i}": lossy_peer(http, base, sid, token, until, tally)
                    for i in range(lossy)},
                 "datachannel_peer": datachannel_peer(http, base, sid, token, until, tally),
                 **{f"slow_ws{i}": slow_websocket(base, sid, token, until, tally)
                    for i in range(slow_ws)},
                 "novnc": novnc(http, base, sid, token, until, tally)}
        tasks = [asyncio.create_task(coro, name=name) for name, coro in parts.items()]
        await asyncio.sleep(1.0)  # the held-open viewers first, then the flood
        tasks.append(asyncio.create_task(flood(http, base, sid, token, seconds - 2.0, tally),
                                         name="flood"))
        done, pending = await asyncio.wait(tasks, timeout=seconds + 10)
        for task in pending:  # a part stuck past the window (logged, then cancelled)
            task.cancel()
            tally.notes[f"part_stuck_{task.get_name()}"] += 1
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if (e := task.exception()) is not None:
                tally.notes[f"part_failed_{task.get_name()}_{e!r}"[:120]] += 1
    out = tally.to_json()
    out["notes"]["rtp_packets_dropped_undecoded"] = _NoDecode.packets
    out["seconds"] = round(time.monotonic() - t0, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_pct"] = round((usage.ru_utime + usage.ru_stime) / out["seconds"] * 100, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--lossy", type=int, default=2)
    parser.add_argument("--slow-ws", type=int, default=2)
    parser.add_argument("--signal-start", action="store_true",
                        help="print 'started' when the attack begins")
    args = parser.parse_args()
    result = asyncio.run(attack(args.base, args.session, args.token, args.seconds,
                                args.lossy, args.slow_ws, args.signal_start))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
