"""The runtime agent's own offer check: malformed SDP is an OfferError, never a crash.

The gateway filters most bad offers first; the agent must not rely on it.
"""

import pytest

from agent_side.peers import OfferError, choose_codec

HEAD = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize("sdp", [
    "",
    "garbage",
    HEAD,  # no media at all
    HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
    HEAD + "m=video 9 UDP/TLS/RTP/SAVPF\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n",  # no formats
    HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 999\r\na=rtpmap:999 H264/90000\r\n",  # payload type > 127
    HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 AV1/90000\r\na=recvonly\r\n",
    HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=sendonly\r\n",
])
def test_malformed_or_unusable_offers_are_offer_errors(sdp: str) -> None:
    with pytest.raises(OfferError):
        choose_codec(sdp)


def test_a_vp8_only_offer_is_accepted() -> None:
    sdp = (HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
           "a=rtpmap:96 VP8/90000\r\na=recvonly\r\n")
    assert choose_codec(sdp) == "vp8"
