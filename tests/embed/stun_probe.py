"""A STUN/TURN listener on 127.0.0.1 that records what WebRTC clients ask it.

It answers a STUN ``Binding`` request with the sender's address (a real STUN
server's answer) and a TURN ``Allocate`` with the ``401`` challenge (``REALM``,
``NONCE``) a TURN server sends first; the client's second ``Allocate`` then
carries the ``USERNAME`` it was configured with, which :attr:`StunProbe.usernames`
records. It relays nothing: it shows which servers (and credentials) a browser's
``RTCPeerConnection`` was given, through the messages the browser sends.
"""

from __future__ import annotations

import asyncio

from aioice import stun


class StunProbe(asyncio.DatagramProtocol):
    """Counts ``Binding`` requests and collects ``Allocate`` user names."""

    def __init__(self) -> None:
        self.bindings = 0
        self.allocates = 0
        self.usernames: list[str] = []
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                           local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_class != stun.Class.REQUEST or self._transport is None:
            return
        if request.message_method == stun.Method.BINDING:
            self.bindings += 1
            reply = stun.Message(message_method=stun.Method.BINDING,
                                 message_class=stun.Class.RESPONSE,
                                 transaction_id=request.transaction_id)
            reply.attributes["XOR-MAPPED-ADDRESS"] = addr
        elif request.message_method == stun.Method.ALLOCATE:
            self.allocates += 1
            username = request.attributes.get("USERNAME")
            if isinstance(username, str):
                self.usernames.append(username)
            reply = stun.Message(message_method=stun.Method.ALLOCATE,
                                 message_class=stun.Class.ERROR,
                                 transaction_id=request.transaction_id)
            reply.attributes["ERROR-CODE"] = (401, "Unauthorized")
            reply.attributes["REALM"] = "visual-runtime.test"
            reply.attributes["NONCE"] = b"0123456789abcdef"
        else:
            return
        self._transport.sendto(bytes(reply), addr)
