"""The playout-delay RTP header extension (agent_side.rtpext).

Wire format and the extension map on their own, then end to end on a light
session: real headless Chromium negotiates it through the viewer page; a raw
aiortc receiver whose offer carries the extmap sees it on every packet; a
stock aiortc WHEP client (no extmap in its offer) gets aiortc's own answer
and packets, and still decodes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, unpack_header_extensions
from playwright.async_api import Browser

from agent_side.rtpext import (
    PLAYOUT_DELAY_URI,
    PlayoutDelay,
    PlayoutDelayExtensionsMap,
    offered_extension_id,
)
from tests.gateway_fixtures import Gateway
from tests.viewer.pages import open_viewer, wait_connected
from tests.webrtc.whep_client import Typist, WhepViewer, wait_until

pytestmark = pytest.mark.timeout(120)

EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\w+)? (\S+)", re.M)




def extmaps(sdp: str) -> dict[str, int]:
    return {uri: int(ext_id) for ext_id, uri in EXTMAP.findall(sdp)}


def rtp_extensions(data: bytes) -> dict[int, bytes]:
    """Header extension elements of a raw RTP packet, by id (RFC 8285)."""
    if not data[0] & 0x10:
        return {}
    pos = 12 + 4 * (data[0] & 0x0F)
    profile, words = struct.unpack_from("!HH", data, pos)
    return dict(unpack_header_extensions(profile, data[pos + 4:pos + 4 + 4 * words]))


def capture_rtp(pc: RTCPeerConnection) -> list[bytes]:
    """Record every decrypted RTP packet *pc*'s video transport receives."""
    transport: Any = pc.getTransceivers()[0].receiver.transport
    packets: list[bytes] = []
    original: Callable[..., Awaitable[None]] = transport._handle_rtp_data

    async def handle(data: bytes, arrival_time_ms: int) -> None:
        packets.append(data)
        await original(data, arrival_time_ms=arrival_time_ms)

    transport._handle_rtp_data = handle
    return packets


# -- wire format --------------------------------------------------------------


def test_playout_delay_payload() -> None:
    assert PlayoutDelay().pack() == b"\x00\x00\x00"
    assert PlayoutDelay(100, 2000).pack() == bytes([0x00, 0xA0, 0xC8])
    assert PlayoutDelay.unpack(bytes([0x00, 0xA0, 0xC8])) == PlayoutDelay(100, 2000)
    assert PlayoutDelay.unpack(PlayoutDelay(40950, 40950).pack()) == PlayoutDelay(40950, 40950)
    for bad in ((5, 10), (-10, 0), (0, 40960), (20, 10)):
        with pytest.raises(ValueError):
            PlayoutDelay(*bad)
    with pytest.raises(ValueError):
        PlayoutDelay.unpack(b"\x00\x00")


def test_map_adds_the_element_only_when_negotiated() -> None:
    params = RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=9, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=2, uri="http://www.webrtc.org/experiments/"
                                                  "rtp-hdrext/abs-send-time"),
    ])
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=90000, ssrc=1234)
    packet.payload = b"\x65" * 20
    packet.extensions.mid = "0"
    packet.extensions.abs_send_time = 0x123456

    plain = PlayoutDelayExtensionsMap(PlayoutDelay())
    plain.configure(params)
    stock = HeaderExtensionsMap()
    stock.configure(params)
    assert packet.serialize(plain) == packet.serialize(stock)

    params.headerExtensions.append(RTCRtpHeaderExtensionParameters(id=5, uri=PLAYOUT_DELAY_URI))
    stamped = PlayoutDelayExtensionsMap(PlayoutDelay())
    stamped.configure(params)
    data = packet.serialize(stamped)
    assert rtp_extensions(data) == {9: b"0", 2: b"\x12\x34\x56", 5: b"\x00\x00\x00"}
    # aiortc's own parser still reads its extensions and the payload
    stock.configure(params)
    parsed = RtpPacket.parse(data, stock)
    assert parsed.extensions.mid == "0" and parsed.extensions.abs_send_time == 0x123456
    assert parsed.payload == packet.payload


def test_offered_extension_id() -> None:
    offer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\n"
             "a=recvonly\r\na=extmap:5 " + PLAYOUT_DELAY_URI + "\r\n"
             "a=rtpmap:96 VP8/90000\r\n")
    assert offered_extension_id(offer, PLAYOUT_DELAY_URI, "v") == 5
    assert offered_extension_id(offer, PLAYOUT_DELAY_URI, None) == 5
    assert offered_extension_id(offer, PLAYOUT_DELAY_URI, "other") is None
    assert offered_extension_id(offer.replace(PLAYOUT_DELAY_URI, "urn:x"),
                                PLAYOUT_DELAY_URI, "v") is None


# -- end to end ---------------------------------------------------------------


async def test_chromium_negotiates_playout_delay(light_gateway: Gateway, browser: Browser) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="800x600", enable_recording=False)
    sid = session["session_id"]
    page = await open_viewer(browser, gw, sid, session["tokens"]["view"], transport="webrtc")
    try:
        await wait_connected(page, "webrtc")
        sdp: dict[str, Any] = await page.evaluate("""async () => {
            const pc = vrViewer.transport.pc;
            const receiver = pc.getReceivers().find((r) => r.track.kind === 'video');
            return {offer: pc.localDescription.sdp, answer: pc.remoteDescription.sdp,
                    receiving: receiver.getParameters().headerExtensions.map((e) => e.uri)};
        }""")
        offered = extmaps(sdp["offer"])
        assert PLAYOUT_DELAY_URI in offered, sdp["offer"]
        assert extmaps(sdp["answer"]).get(PLAYOUT_DELAY_URI) == offered[PLAYOUT_DELAY_URI], \
            sdp["answer"]
        assert PLAYOUT_DELAY_URI in sdp["receiving"]
        async with Typist(gw, sid):
            await page.wait_for_function("""async () => {
                let decoded = 0;
                (await vrViewer.transport.pc.getStats()).forEach((s) => {
                    if (s.type === 'inbound-rtp' && s.kind === 'video') decoded = s.framesDecoded;
                });
                return decoded >= 3;
            }""", timeout=30000)
    finally:
        await page.close()


async def test_aiortc_receivers_with_and_without_the_extension(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="800x600", enable_recording=False)
    sid = session["session_id"]
    token = session["tokens"]["view"]

    # A receiver that offers the extension (aiortc cannot: the extmap is added to its SDP).
    pc = RTCPeerConnection()
    stock = WhepViewer(gw, sid, token, codec="h264")
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences([
            c for c in RTCRtpReceiver.getCapabilities("video").codecs
            if c.mimeType.lower() == "video/h264"
            and str(c.parameters.get("packetization-mode")) == "1"])
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        taken = set(extmaps(offer).values())
        ext_id = next(i for i in range(1, 15) if i not in taken)
        offer = re.sub(r"(a=mid:0\r\n)", rf"\1a=extmap:{ext_id} {PLAYOUT_DELAY_URI}\r\n",
                       offer, count=1)
        assert extmaps(offer)[PLAYOUT_DELAY_URI] == ext_id
        packets = capture_rtp(pc)
        async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/whep"), data=offer,
                                headers={"Authorization": f"Bearer {token}",
                                         "Content-Type": "application/sdp"}) as resp:
            answer = await resp.text()
            assert resp.status == 201, answer
        assert extmaps(answer)[PLAYOUT_DELAY_URI] == ext_id, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

        # The stock WHEP client: no extmap offered, none answered, none sent.
        await stock.connect()
        assert PLAYOUT_DELAY_URI not in extmaps(stock.answer_sdp), stock.answer_sdp
        stock_ids = set(extmaps(stock.answer_sdp).values())
        stock_packets = capture_rtp(stock.pc)

        async with Typist(gw, sid):
            await wait_until(lambda: len(packets) >= 20, 30, "20 RTP packets")
            await stock.wait_frames(3)
            await wait_until(lambda: len(stock_packets) >= 20, 30, "20 RTP packets (stock)")
        for data in packets:
            assert rtp_extensions(data).get(ext_id) == PlayoutDelay(0, 0).pack()
        for data in stock_packets:
            assert set(rtp_extensions(data)) <= stock_ids
    finally:
        await pc.close()
        await stock.close()
