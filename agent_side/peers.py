"""WebRTC viewers of a session: WHEP answers, the ``input`` data channel.

Each peer gets an :class:`~agent_side.track.EncodedVideoTrack` on the shared
:class:`~agent_side.media.VideoSource`, so N viewers cost one encode. The
codec is chosen from the offer before aiortc negotiates: H.264
(packetization-mode 1) when offered, else VP8.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.sdp import SessionDescription

from wire.datachannel import control_message

from .control import InputGate
from .errors import AgentSideError
from .injector import InputInjector
from .inputs import InputHandler, RateLimiter
from .limits import ViewerAdmission, ViewerTicket
from .media import VideoSource
from .rtpext import enable_playout_delay
from .sctpguard import watch as watch_sctp
from .track import EncodedVideoTrack, attach_sender

logger = logging.getLogger(__name__)

TokenKind = Literal["view", "control", "api"]


class OfferError(AgentSideError):
    """The WHEP offer cannot be answered (bad SDP, no video, no common codec)."""


@dataclass
class Peer:
    peer_id: str
    pc: RTCPeerConnection
    token_kind: TokenKind
    token_id: str
    codec: str
    track: EncodedVideoTrack
    created: float = field(default_factory=time.monotonic)
    channel: RTCDataChannel | None = None
    dropped_messages: int = 0
    limiter: RateLimiter = field(default_factory=RateLimiter)
    ticket: ViewerTicket | None = None


def choose_codec(offer_sdp: str) -> str:
    """``"h264"`` or ``"vp8"`` from a WHEP offer; raises OfferError otherwise."""
    try:
        description = SessionDescription.parse(offer_sdp)
    except (ValueError, IndexError, KeyError, AssertionError, TypeError) as e:
        # aiortc's parser asserts on some malformed lines (e.g. an m-line with no formats).
        raise OfferError("the offer is not valid SDP" + (f": {e}" if str(e) else "")) from e
    videos = [m for m in description.media if m.kind == "video"]
    if not videos:
        raise OfferError("the offer has no video m-line")
    media = videos[0]
    if media.direction not in (None, "recvonly", "sendrecv"):
        raise OfferError(f"the video m-line must be recvonly, not {media.direction}")
    common = find_common_codecs(CODECS["video"], media.rtp.codecs)
    mimes = [c.mimeType.lower() for c in common]
    for codec in common:
        if codec.mimeType.lower() == "video/h264" and str(
            codec.parameters.get("packetization-mode", "0")
        ) == "1":
            return "h264"
    if "video/vp8" in mimes:
        return "vp8"
    raise OfferError("the offer has neither H.264 (packetization-mode 1) nor VP8")


def _preferences(codec: str) -> list[Any]:
    caps = RTCRtpSender.getCapabilities("video").codecs
    if codec == "h264":
        h264 = [c for c in caps if c.mimeType.lower() == "video/h264"
                and str(c.parameters.get("packetization-mode")) == "1"]
        # Constrained baseline (42e0xx) first: it is what x264's baseline emits.
        return sorted(h264, key=lambda c: not str(
            c.parameters.get("profile-level-id", "")).lower().startswith("42e0"))
    return [c for c in caps if c.mimeType.lower() == "video/vp8"]


class PeerManager:
    """All WebRTC peers of one session."""

    def __init__(self, source: VideoSource, gate: InputGate, injector: InputInjector,
                 session_id: str = "", admission: ViewerAdmission | None = None) -> None:
        self._source = source
        self._gate = gate
        self._injector = injector
        self._session_id = session_id
        self.admission = admission or ViewerAdmission(session_id=session_id)
        """Viewer caps shared with the other transports (see :mod:`agent_side.limits`)."""
        self._peers: dict[str, Peer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.inputs = InputHandler(gate, injector, session_id)
        """Input rules shared with the other transports (see :mod:`agent_side.inputs`)."""

    @property
    def messages_dropped(self) -> int:
        return self.inputs.messages_dropped

    @property
    def count(self) -> int:
        return len(self._peers)

    def describe(self) -> list[dict[str, object]]:
        return [{"peer_id": p.peer_id, "codec": p.codec, "token_kind": p.token_kind,
                 "state": p.pc.connectionState,
                 "bitrate_estimate": p.track.subscription.bitrate_estimate,
                 "steers_bitrate": p.track.subscription.steers_bitrate,
                 "frames_dropped": p.track.subscription.dropped,
                 "frames_paced_out": p.track.subscription.paced_out}
                for p in self._peers.values()]

    async def answer(self, offer_sdp: str, token_kind: TokenKind, token_id: str) -> tuple[str, str]:
        """Answer a WHEP offer; returns (peer id, answer SDP with candidates).

        Raises :class:`~agent_side.limits.ViewerRefused` over a cap (offers per
        minute, peers), before any ICE or DTLS work is done."""
        self.admission.check_offer(token_id)
        codec = choose_codec(offer_sdp)
        ticket = self.admission.admit("webrtc", token_id)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peer_id = secrets.token_urlsafe(16)
        try:
            transceiver = pc.addTransceiver("video", direction="sendonly")
            transceiver.setCodecPreferences(_preferences(codec))
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            # Offered by Chromium: render each frame as soon as it is decoded.
            playout_delay_id = enable_playout_delay(transceiver, offer_sdp)
            # Only a token that may take control steers the shared encoder's bitrate
            # (REMB); a view-only peer that reports less is paced on its own.
            # Its keyframe requests (PLI/FIR) count against its token's budget.
            steers = token_kind in ("control", "api")
            track = EncodedVideoTrack(self._source.subscribe(
                codec, name=peer_id, steers_bitrate=steers,
                keyframe_group=None if steers else f"token:{token_id}"))
            transceiver.sender.replaceTrack(track)
            attach_sender(transceiver.sender, track)
            peer = Peer(peer_id, pc, token_kind, token_id, codec, track, ticket=ticket)
            self._wire(peer)
            await pc.setLocalDescription(await pc.createAnswer())
        except OfferError:
            self.admission.release(ticket)
            await pc.close()
            raise
        except Exception as e:
            self.admission.release(ticket)
            await pc.close()
            raise OfferError(f"cannot answer the offer: {e}") from e
        self._peers[peer_id] = peer
        self._spawn(self._ghost_deadline(peer))
        logger.info("session %s: peer %s joined (%s, %s token, playout-delay %s)",
                    self._session_id, peer_id, codec, token_kind,
                    "0 ms" if playout_delay_id is not None else "not offered")
        return peer_id, pc.localDescription.sdp

    async def _ghost_deadline(self, peer: Peer) -> None:
        """Close *peer* if ICE and DTLS have not connected within the deadline: an
        offer without candidates (and no end-of-candidates) never fails on its own."""
        await asyncio.sleep(self.admission.limits.ice_deadline_s)
        if self._peers.get(peer.peer_id) is peer and peer.pc.connectionState != "connected":
            self.admission.note_closed("ghost_peer", peer.peer_id)
            await self.close(peer.peer_id)

    async def _oversize(self, peer: Peer, size: int, chunks: int) -> None:
        self.admission.note_closed("datachannel_oversize", peer.peer_id)
        await self.close(peer.peer_id)

    def _wire(self, peer: Peer) -> None:
        pc = peer.pc
        if pc.sctp is not None:  # the offer has a data channel m-line
            watch_sctp(pc.sctp, self.admission.limits.datachannel_max_bytes,
                       lambda size, chunks: self._spawn(self._oversize(peer, size, chunks)))

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != "input":
                return
            peer.channel = channel
            channel.send(control_message(self._gate.controller))

            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                # Shed a flood here, before a task per message is created.
                if not self.inputs.admit(peer.limiter, peer.peer_id):
                    peer.dropped_messages += 1
                    return
                self._spawn(self._on_input(peer, message))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close(peer.peer_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_input(self, peer: Peer, raw: str | bytes) -> None:
        outcome = await self.inputs.handle(raw, peer.token_kind, peer.token_id, peer.peer_id)
        if outcome.dropped:
            peer.dropped_messages += 1
        if outcome.reply is not None:
            self._send(peer, outcome.reply)

    @staticmethod
    def _send(peer: Peer, text: str) -> None:
        channel = peer.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)

    def broadcast(self, payload: dict[str, object]) -> None:
        text = json.dumps(payload)
        for peer in list(self._peers.values()):
            self._send(peer, text)

    def broadcast_control(self, controller: Literal["agent", "human"]) -> None:
        for peer in list(self._peers.values()):
            self._send(peer, control_message(controller))

    async def close(self, peer_id: str, token_kind: TokenKind | None = None,
                    token_id: str | None = None) -> bool:
        """Close a peer. With a caller's token, only the token that opened the peer (or
        the API token) may close it: another viewer's DELETE is "no such peer"."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        if token_kind not in (None, "api") and peer.token_id != token_id:
            return False
        self._peers.pop(peer_id, None)
        if peer.ticket is not None:
            self.admission.release(peer.ticket)
        peer.track.stop()
        await peer.pc.close()
        await self._gate.release_for(peer.token_id)
        logger.info("session %s: peer %s left", self._session_id, peer_id)
        return True

    async def aclose(self) -> None:
        for peer_id in list(self._peers):
            await self.close(peer_id)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
