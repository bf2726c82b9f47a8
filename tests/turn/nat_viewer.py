"""An aiortc WHEP viewer run inside the test's NAT'd network namespace.

``python -m tests.turn.nat_viewer BASE SID TOKEN SECONDS [--no-ice-servers]`` takes the
ICE servers the viewer page would get (``/sessions/{id}/info``), offers over WHEP,
counts decoded frames for up to SECONDS and prints one JSON line: frames, the type of
the local candidate of the nominated pair (``relay`` through TURN), the WHEP ``Link``
headers, and the ICE servers it used.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription


def nominated_type(pc: RTCPeerConnection) -> str | None:
    """The local candidate type of the pair ICE nominated (aioice internals: the test's
    proof that media took the relay)."""
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        connection = getattr(ice, "_connection", None)
        for pair in (getattr(connection, "_nominated", None) or {}).values():
            return str(pair.local_candidate.type)
    return None


async def main(base: str, sid: str, token: str, seconds: float, use_ice: bool) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/sessions/{sid}/info", params={"token": token}) as resp:
            info = await resp.json()
        servers = info.get("ice_servers", []) if use_ice else []
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"),
                         credential=s.get("credential")) for s in servers]))
        pc.addTransceiver("video", direction="recvonly")
        frames = 0
        got = asyncio.Event()

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def consume() -> None:
                nonlocal frames
                while True:
                    try:
                        await track.recv()
                    except Exception:  # noqa: BLE001 - the track ended
                        return
                    frames += 1
                    if frames >= 5:
                        got.set()
            asyncio.ensure_future(consume())

        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{base}/api/visual-sessions/{sid}/whep",
                             data=pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp",
                                      "Authorization": f"Bearer {token}"}) as resp:
            answer = await resp.text()
            links = resp.headers.getall("Link", [])
            status = resp.status
        if status == 201:
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            try:
                await asyncio.wait_for(got.wait(), seconds)
            except TimeoutError:
                pass
        result = {"status": status, "frames": frames, "pair": nominated_type(pc),
                  "links": links, "ice_servers": servers}
        await pc.close()
        return result


if __name__ == "__main__":
    base, sid, token, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    out = asyncio.run(main(base, sid, token, seconds, "--no-ice-servers" not in sys.argv))
    print(json.dumps(out), flush=True)
