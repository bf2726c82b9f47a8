"""WebSocket viewers: the shared H.264 packets straight to the browser.

The page decodes them with WebCodecs (``VideoDecoder``) and draws them on a
canvas: no ICE, no STUN/TURN, one TCP connection through the gateway's port.
The gateway authenticates the caller and proxies ``GET /stream`` here over the
unix socket, passing ``X-VR-Token-Kind`` / ``X-VR-Token-Id``.

Wire format (one WebSocket per viewer):

* server -> client **binary**: one encoded frame per message, a 12-byte
  header then the Annex-B H.264 access unit::

      byte 0      message kind, 1 = video
      byte 1      flags, bit 0 = keyframe
      bytes 2-3   reserved (0)
      bytes 4-11  pts, unsigned big-endian, 1/90000 s

* server -> client **text**: JSON ``{"type": "hello", "codec": "h264",
  "width": .., "height": ..}`` first, then ``control`` and ``error`` messages
  exactly as on the WebRTC ``input`` data channel.
* client -> server **text**: the ``input`` data-channel messages of API.md,
  under the same control rules, plus ``{"type": "keyframe"}`` (the decoder
  lost sync).

A viewer starts at a keyframe (one is requested on connect). When the
socket's write buffer backs up, frames are dropped until the next keyframe
instead of queueing latency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web

from wire.datachannel import control_message

from .inputs import InputHandler, RateLimiter, TokenKind
from .media import PacketSubscription, SubscriptionClosed, VideoSource

__all__ = ["HEADER", "KIND_VIDEO", "StreamViewers", "pack_frame"]

logger = logging.getLogger(__name__)

HEADER: Final = struct.Struct(">BBHQ")
KIND_VIDEO: Final = 1
FLAG_KEYFRAME: Final = 1
MAX_BUFFERED: Final = 256 * 1024
"""Write-buffer level (bytes) above which non-keyframes are dropped."""
SLOW_VIEWER_S: Final = 10.0
"""A viewer whose socket takes nothing for this long (a send blocked, or the write
buffer above :data:`MAX_BUFFERED` throughout) is cut off: its connection is aborted."""
BROADCAST_TIMEOUT_S: Final = 2.0
"""A control message that a viewer's socket does not take within this is its last:
one stalled viewer must not hold up a control change for the others."""
KEYFRAME_REQUEST_GAP_S: Final = 0.5
"""Keyframe requests from one viewer closer than this are ignored (each one makes
every viewer's next frame a big one)."""


def pack_frame(data: bytes, pts: int, keyframe: bool) -> bytes:
    """One binary message: header + access unit."""
    return HEADER.pack(KIND_VIDEO, FLAG_KEYFRAME if keyframe else 0, 0, pts) + data


@dataclass
class _Viewer:
    viewer_id: str
    ws: web.WebSocketResponse
    token_kind: TokenKind
    token_id: str
    created: float = field(default_factory=time.monotonic)
    frames_sent: int = 0
    frames_dropped: int = 0
    bytes_sent: int = 0
    limiter: RateLimiter = field(default_factory=RateLimiter)
    transport: asyncio.Transport | None = None
    keyframe_asked: float = 0.0


class StreamViewers:
    """All WebSocket viewers of one session."""

    def __init__(self, source: VideoSource, inputs: InputHandler, session_id: str = "") -> None:
        self._source = source
        self._inputs = inputs
        self._session_id = session_id
        self._viewers: dict[str, _Viewer] = {}
        self._closing = False
        self.slow_cut = 0
        """Viewers cut off for not reading (:data:`SLOW_VIEWER_S`, :data:`BROADCAST_TIMEOUT_S`)."""

    @property
    def count(self) -> int:
        return len(self._viewers)

    def describe(self) -> list[dict[str, object]]:
        return [{"viewer_id": v.viewer_id, "token_kind": v.token_kind,
                 "frames_sent": v.frames_sent, "frames_dropped": v.frames_dropped,
                 "bytes_sent": v.bytes_sent} for v in self._viewers.values()]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /stream``: upgrade and serve one viewer until either side closes."""
        kind = request.headers.get("X-VR-Token-Kind", "view")
        token_id = request.headers.get("X-VR-Token-Id", "")
        if kind not in ("view", "control", "api"):
            return web.json_response({"error": "bad_token_kind",
                                      "detail": f"unknown token kind {kind!r}"}, status=400)
        if self._closing:
            return web.json_response({"error": "closing", "detail": "the agent is stopping"},
                                     status=503)
        ws = web.WebSocketResponse(heartbeat=20, compress=False, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        viewer = _Viewer(secrets.token_urlsafe(8), ws, kind, token_id,  # type: ignore[arg-type]
                         transport=request.transport)
        self._viewers[viewer.viewer_id] = viewer
        cfg = self._source.config
        logger.info("session %s: stream viewer %s joined (%s token)", self._session_id,
                    viewer.viewer_id, kind)
        sub = self._source.subscribe("h264", name=f"ws-{viewer.viewer_id}",
                                     keyframe_group=f"token:{token_id}" if kind == "view"
                                     else None)
        sender = asyncio.create_task(self._send_frames(viewer, sub, request))
        try:
            await ws.send_str(json.dumps({"type": "hello", "codec": "h264", "width": cfg.width,
                                          "height": cfg.height, "viewer_id": viewer.viewer_id}))
            await ws.send_str(control_message(self._inputs.controller))
            sub.request_keyframe()
            await self._receive(viewer, sub)
        finally:
            sub.close()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self._viewers.pop(viewer.viewer_id, None)
            await ws.close()
            await self._inputs.release_for(token_id)
            logger.info("session %s: stream viewer %s left (%d frames, %d dropped)",
                        self._session_id, viewer.viewer_id, viewer.frames_sent,
                        viewer.frames_dropped)
        return ws

    async def _receive(self, viewer: _Viewer, sub: PacketSubscription) -> None:
        name = f"ws-{viewer.viewer_id}"
        async for msg in viewer.ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                # Keyframe requests count against the rate too: each one costs an encode.
                if not self._inputs.admit(viewer.limiter, name):
                    continue
                if msg.type == WSMsgType.TEXT and _is_keyframe_request(msg.data):
                    now = time.monotonic()
                    if now - viewer.keyframe_asked >= KEYFRAME_REQUEST_GAP_S:
                        viewer.keyframe_asked = now
                        sub.request_keyframe()
                    continue
                outcome = await self._inputs.handle(msg.data, viewer.token_kind, viewer.token_id,
                                                    name)
                if outcome.reply is not None and not viewer.ws.closed:
                    await viewer.ws.send_str(outcome.reply)
            elif msg.type == WSMsgType.ERROR:
                if getattr(viewer.ws.exception(), "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                    self._inputs.dropped["too_large"] += 1  # aiohttp closes with 1009
                logger.debug("session %s: stream viewer %s: %s", self._session_id,
                             viewer.viewer_id, viewer.ws.exception())
                return

    async def _send_frames(self, viewer: _Viewer, sub: PacketSubscription,
                           request: web.Request) -> None:
        transport = request.transport
        waiting_for_key = False
        backed_up_since: float | None = None
        last_len = 0
        try:
            while True:
                packet = await sub.get()
                key = bool(packet.is_keyframe)
                buffered = transport.get_write_buffer_size() if transport is not None else 0
                now = time.monotonic()
                if buffered <= MAX_BUFFERED:
                    backed_up_since = None
                elif backed_up_since is None:
                    backed_up_since = now
                elif now - backed_up_since > SLOW_VIEWER_S:
                    self._cut(viewer, f"{buffered} bytes unread for {SLOW_VIEWER_S:.0f} s")
                    return
                # What is still buffered of the last frame sent is no backlog: a keyframe
                # of a text page (300-500 kB at 1600x900) alone filled the buffer past
                # MAX_BUFFERED, so the next frame was dropped and another keyframe asked
                # for, in a loop, as long as the screen showed text.
                backlog = buffered - last_len
                if not key and (waiting_for_key or backlog > MAX_BUFFERED):
                    if not waiting_for_key:
                        logger.debug("session %s: stream viewer %s is slow (%d bytes "
                                     "buffered); dropping to the next keyframe",
                                     self._session_id, viewer.viewer_id, buffered)
                        sub.request_keyframe()
                    waiting_for_key = True
                    viewer.frames_dropped += 1
                    continue
                waiting_for_key = False
                data = pack_frame(bytes(packet), int(packet.pts or 0), key)
                try:
                    await asyncio.wait_for(viewer.ws.send_bytes(data), SLOW_VIEWER_S)
                except TimeoutError:
                    self._cut(viewer, f"a send blocked for {SLOW_VIEWER_S:.0f} s")
                    return
                viewer.frames_sent += 1
                viewer.bytes_sent += len(data)
                last_len = len(data)
        except (SubscriptionClosed, ConnectionResetError):
            return
        except Exception as e:  # a send on a closing socket: the receiver ends the viewer
            logger.debug("session %s: stream viewer %s send ended: %s", self._session_id,
                         viewer.viewer_id, e)
            await viewer.ws.close()

    async def broadcast(self, text: str) -> None:
        """Send a JSON text message (control change etc.) to every viewer, all at once:
        a viewer that does not take it within :data:`BROADCAST_TIMEOUT_S` is cut off."""
        await asyncio.gather(*(self._send_text(viewer, text)
                               for viewer in list(self._viewers.values())))

    async def _send_text(self, viewer: _Viewer, text: str) -> None:
        if viewer.ws.closed:
            return
        try:
            await asyncio.wait_for(viewer.ws.send_str(text), BROADCAST_TIMEOUT_S)
        except TimeoutError:
            self._cut(viewer, f"a control message waited {BROADCAST_TIMEOUT_S:.0f} s")
        except (ConnectionResetError, RuntimeError) as e:
            logger.debug("session %s: broadcast to %s failed: %s", self._session_id,
                         viewer.viewer_id, e)

    def _cut(self, viewer: _Viewer, why: str) -> None:
        """Abort a viewer that does not read (its handler then cleans up)."""
        self.slow_cut += 1
        logger.warning("session %s: stream viewer %s cut off, it does not read: %s",
                       self._session_id, viewer.viewer_id, why)
        if viewer.transport is not None:
            viewer.transport.abort()

    async def aclose(self) -> None:
        """Close every viewer (their handlers finish and clean up)."""
        self._closing = True
        for viewer in list(self._viewers.values()):
            await viewer.ws.close(code=1001, message=b"agent stopping")


def _is_keyframe_request(raw: str) -> bool:
    if '"keyframe"' not in raw:
        return False
    try:
        obj = json.loads(raw)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "keyframe"
