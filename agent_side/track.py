"""An aiortc video track that carries already-encoded packets.

``RTCRtpSender`` packetizes :class:`av.Packet` objects returned by a
track's ``recv()`` without encoding them (``rtcrtpsender.py``,
``_next_encoded_frame``, non-Frame branch; ``H264Encoder.pack`` splits the
Annex-B stream on start codes, ``Vp8Encoder.pack`` wraps one VP8 frame in
payload descriptors). Both codecs therefore work in packet mode.

In that mode aiortc drops the two feedback signals that matter to an
encoder: PLI/FIR only set a flag read on the Frame path, and REMB goes to
the sender's private (unused) encoder. :func:`attach_sender` forwards both
to the shared encoder through the track's :class:`PacketSubscription`.
"""

from __future__ import annotations

import logging
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from .media import PacketSubscription, SubscriptionClosed

__all__ = ["EncodedVideoTrack", "attach_sender"]

logger = logging.getLogger(__name__)


class EncodedVideoTrack(MediaStreamTrack):
    """A ``video`` track whose ``recv()`` yields encoded packets of one subscription.

    Stopping the track closes the subscription.
    """

    kind = "video"

    def __init__(self, subscription: PacketSubscription) -> None:
        super().__init__()
        self.subscription = subscription

    @property
    def codec(self) -> str:
        """``"h264"`` or ``"vp8"``: the codec the peer must negotiate."""
        return self.subscription.codec

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            return await self.subscription.get()
        except SubscriptionClosed as e:
            self.stop()
            raise MediaStreamError from e

    def stop(self) -> None:
        super().stop()
        self.subscription.close()


def attach_sender(sender: RTCRtpSender, track: EncodedVideoTrack) -> None:
    """Route *sender*'s PLI/FIR and REMB feedback to *track*'s shared encoder.

    Wraps two private hooks of aiortc 1.16's ``RTCRtpSender`` on this one
    instance: ``_send_keyframe`` (called for PLI and FIR) and
    ``_handle_rtcp_packet`` (where REMB is parsed).
    """
    subscription = track.subscription
    original_handle = sender._handle_rtcp_packet

    def send_keyframe() -> None:
        logger.debug("PLI/FIR from peer of %r: keyframe requested", subscription.name)
        subscription.request_keyframe()

    async def handle_rtcp_packet(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                bitrate, ssrcs = 0, []
            if sender._ssrc in ssrcs:
                subscription.set_bitrate_estimate(bitrate)
        await original_handle(packet)

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
