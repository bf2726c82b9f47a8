"""The ``playout-delay`` RTP header extension for aiortc 1.16 senders.

Chromium offers ``http://www.webrtc.org/experiments/rtp-hdrext/playout-delay``
on video m-lines. When a sender negotiates it and stamps its packets with
``min = max = 0`` Chromium takes its low-latency rendering path: frames get
no render-time target, the jitter buffer releases each frame as soon as it is
decodable, and the compositor shows it on the next vsync (cloud gaming does
this). ``receiver.jitterBufferTarget = 0`` on the page only lowers the
*minimum* delay; the maximum stays adaptive.

aiortc 1.16 knows neither the URI nor the payload, so this module extends it
from the outside, for one peer at a time, without touching aiortc's globals
(``aiortc.codecs.HEADER_EXTENSIONS`` stays as it is):

* negotiation — after ``setRemoteDescription(offer)``, :func:`enable_playout_delay`
  appends the extension, with the offer's id, to the transceiver's negotiated
  list (``RTCRtpTransceiver._headerExtensions``), which is what aiortc's
  ``createAnswer`` writes as ``a=extmap`` and what its sender is configured
  with;
* sending — the sender's private ``HeaderExtensionsMap`` is replaced by a
  :class:`PlayoutDelayExtensionsMap`, which adds the 3-byte element to every
  packet it serializes (original packets and retransmissions). Chromium keeps
  the last limits it saw, so stamping every packet makes the setting survive
  loss and late joins.

Both hooks are private aiortc API. The module refuses to import with an
aiortc it was not checked against (:data:`SUPPORTED_AIORTC`), and
:func:`enable_playout_delay` raises :class:`RtpExtensionError` if the
internals it touches are not where they were: re-check them (``rtcrtpsender.py``
``__init__``/``send``/``_run_rtp``, ``rtcpeerconnection.py``
``setRemoteDescription``/``createAnswer``, ``rtp.py`` ``HeaderExtensionsMap``)
before widening the version range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiortc
from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    pack_header_extensions,
    unpack_header_extensions,
)
from aiortc.sdp import SessionDescription

from .errors import AgentSideError

__all__ = [
    "PLAYOUT_DELAY_URI",
    "SUPPORTED_AIORTC",
    "PlayoutDelay",
    "PlayoutDelayExtensionsMap",
    "RtpExtensionError",
    "enable_playout_delay",
    "offered_extension_id",
]

logger = logging.getLogger(__name__)

PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
"""The extension's URI in ``a=extmap`` lines."""

SUPPORTED_AIORTC = ("1.16.",)
"""aiortc version prefixes whose private internals this module was checked against."""

_SENDER_MAP_ATTR = "_RTCRtpSender__rtp_header_extensions_map"
"""``RTCRtpSender.__rtp_header_extensions_map`` after Python's name mangling."""

_UNIT_MS = 10
_MAX_UNITS = 0xFFF


class RtpExtensionError(AgentSideError):
    """aiortc's internals are not what this module extends, or it was used out of order."""


@dataclass(frozen=True)
class PlayoutDelay:
    """Playout-delay limits a sender asks the receiver to honour.

    Wire format: 12-bit minimum then 12-bit maximum, big-endian, in 10 ms
    units (3 bytes).
    """

    min_ms: int = 0
    """Lowest delay the receiver may add between receiving and rendering a frame."""
    max_ms: int = 0
    """Highest such delay; ``min = max = 0`` selects Chromium's render-immediately path."""

    def __post_init__(self) -> None:
        for name, value in (("min_ms", self.min_ms), ("max_ms", self.max_ms)):
            if value % _UNIT_MS or not 0 <= value <= _MAX_UNITS * _UNIT_MS:
                raise ValueError(f"{name} must be a multiple of 10 in 0..40950, got {value!r}")
        if self.min_ms > self.max_ms:
            raise ValueError(f"min_ms {self.min_ms!r} is above max_ms {self.max_ms!r}")

    def pack(self) -> bytes:
        """The 3-byte extension payload."""
        value = (self.min_ms // _UNIT_MS) << 12 | self.max_ms // _UNIT_MS
        return value.to_bytes(3, "big")

    @classmethod
    def unpack(cls, data: bytes) -> PlayoutDelay:
        """Parse a 3-byte payload; raises ValueError on any other length."""
        if len(data) != 3:
            raise ValueError(f"a playout-delay payload is 3 bytes, got {len(data)}")
        value = int.from_bytes(data, "big")
        return cls((value >> 12) * _UNIT_MS, (value & _MAX_UNITS) * _UNIT_MS)


class PlayoutDelayExtensionsMap(HeaderExtensionsMap):
    """aiortc's extension map plus a constant playout-delay element on every packet.

    The element is written only once :meth:`configure` saw the extension in
    the negotiated parameters; until then (and for peers that did not
    negotiate it) packets are serialized exactly as aiortc would.
    """

    def __init__(self, delay: PlayoutDelay) -> None:
        super().__init__()
        self.delay = delay
        self.extension_id: int | None = None
        """The negotiated id, set by :meth:`configure`."""
        self._payload = delay.pack()

    def configure(self, parameters: RTCRtpParameters) -> None:
        super().configure(parameters)
        for ext in parameters.headerExtensions:
            if ext.uri == PLAYOUT_DELAY_URI:
                self.extension_id = ext.id

    def set(self, values: HeaderExtensions) -> tuple[int, bytes]:
        profile, value = super().set(values)
        if self.extension_id is None:
            return profile, value
        elements = unpack_header_extensions(profile, value) if value else []
        elements.append((self.extension_id, self._payload))
        return pack_header_extensions(elements)


def offered_extension_id(offer_sdp: str, uri: str, mid: str | None) -> int | None:
    """The id the offer gives *uri* on the video m-line with *mid* (first video if None)."""
    description = SessionDescription.parse(offer_sdp)
    for media in description.media:
        if media.kind != "video" or (mid is not None and media.rtp.muxId != mid):
            continue
        for ext in media.rtp.headerExtensions:
            if ext.uri == uri:
                return int(ext.id)
        return None
    return None


def enable_playout_delay(transceiver: RTCRtpTransceiver, offer_sdp: str,
                         delay: PlayoutDelay | None = None) -> int | None:
    """Negotiate playout-delay on *transceiver* if the offer has it; the id, or None.

    Call after ``pc.setRemoteDescription(offer)`` and before
    ``pc.createAnswer()`` (the sender must not have started). Without the
    extension in the offer nothing changes: the answer and the packets are
    aiortc's own. Raises :class:`RtpExtensionError` if aiortc's internals
    moved or the call comes too late.
    """
    delay = delay if delay is not None else PlayoutDelay()
    sender = transceiver.sender
    _check_internals(transceiver, sender)
    if transceiver.kind != "video":
        raise RtpExtensionError(f"playout-delay is for video, not {transceiver.kind}")
    ext_id = offered_extension_id(offer_sdp, PLAYOUT_DELAY_URI, transceiver.mid)
    if ext_id is None:
        return None
    negotiated: list[RTCRtpHeaderExtensionParameters] = transceiver._headerExtensions
    if not any(ext.uri == PLAYOUT_DELAY_URI for ext in negotiated):
        negotiated.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=PLAYOUT_DELAY_URI))
    setattr(sender, _SENDER_MAP_ATTR, PlayoutDelayExtensionsMap(delay))
    logger.debug("playout-delay %s..%s ms negotiated as extension %d", delay.min_ms,
                 delay.max_ms, ext_id)
    return ext_id


def _check_internals(transceiver: RTCRtpTransceiver, sender: RTCRtpSender) -> None:
    if transceiver.mid is None:
        raise RtpExtensionError("enable_playout_delay() needs setRemoteDescription(offer) first")
    if not isinstance(getattr(transceiver, "_headerExtensions", None), list):
        raise RtpExtensionError(
            f"aiortc {aiortc.__version__}: RTCRtpTransceiver._headerExtensions is gone; "
            "agent_side.rtpext must be updated")
    current = getattr(sender, _SENDER_MAP_ATTR, None)
    if not isinstance(current, HeaderExtensionsMap):
        raise RtpExtensionError(
            f"aiortc {aiortc.__version__}: RTCRtpSender.__rtp_header_extensions_map is gone; "
            "agent_side.rtpext must be updated")
    if getattr(sender, "_RTCRtpSender__started", True):
        raise RtpExtensionError("enable_playout_delay() must run before the sender starts")


def _check_version() -> None:
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC):
        raise RtpExtensionError(
            f"agent_side.rtpext extends private internals of aiortc {SUPPORTED_AIORTC}, "
            f"found {aiortc.__version__}: re-check them (see the module docstring) and "
            "update SUPPORTED_AIORTC")


_check_version()
