"""TURN for viewers who cannot reach the session: a viewer behind NAT gets media only
through coturn, with credentials the gateway minted for it.

The network, made by the test:

    viewer netns (10.80.S.2) --veth-- nat netns (MASQUERADE) --veth-- host (10.79.S.1)

The host accepts from that link only the gateway's HTTP port and coturn's port (and
replies); it starts nothing towards it. So the viewer can signal (WHEP, the viewer
page) and reach the TURN server, and nothing else: a direct ICE pair between the
viewer and the runtime agent cannot form in either direction.

coturn is Debian's, run with ``use-auth-secret``; the gateway mints a user name and
password per viewer (``--turn-url``, ``--turn-secret-file``), offered in the WHEP
``Link`` headers and on the viewer page. An aiortc viewer in the namespace connects
through a relay candidate; without the ICE servers it gets no media. The viewer page in
headless Chromium (started inside the namespace) plays over WebRTC with TURN and, with
coturn stopped, falls back to the WebSocket transport.
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from gateway.security.turn import turn_password
from tests.conftest import CHROMIUM_ARGS, require_binary
from tests.gateway_fixtures import API_TOKEN, start_served_gateway, stop_served_gateway
from tests.viewer.pages import wait_connected

ROOT = Path(__file__).resolve().parents[2]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr}")
    return done


@dataclass
class NatLink:
    viewer_ns: str
    nat_ns: str
    host_if: str
    host_ip: str
    chain: str

    def allow_tcp(self, port: int) -> None:
        sh("iptables", "-w", "-I", self.chain, "1", "-p", "tcp", "--dport", str(port),
           "-j", "ACCEPT")


@pytest.fixture
def nat_link() -> Iterator[NatLink]:
    tag = secrets.token_hex(3)
    third = random.randrange(0, 250)
    host_ip, nat_out, nat_in, viewer_ip = (f"10.79.{third}.1", f"10.79.{third}.2",
                                           f"10.80.{third}.1", f"10.80.{third}.2")
    link = NatLink(f"vrtv-{tag}", f"vrtn-{tag}", f"vrth-{tag}", host_ip, f"VRT-{tag}")
    host_out = f"vrto-{tag}"
    made_chain = False
    try:
        for ns in (link.viewer_ns, link.nat_ns):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", link.host_if, "type", "veth", "peer", "name", host_out)
        sh("ip", "link", "set", host_out, "netns", link.nat_ns)
        sh("ip", "-n", link.nat_ns, "link", "add", "inside", "type", "veth", "peer", "name",
           "eth0", "netns", link.viewer_ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", link.host_if)
        sh("ip", "link", "set", link.host_if, "up")
        for ns, commands in (
            (link.nat_ns, [["addr", "add", f"{nat_out}/30", "dev", host_out],
                           ["link", "set", host_out, "up"],
                           ["addr", "add", f"{nat_in}/30", "dev", "inside"],
                           ["link", "set", "inside", "up"], ["link", "set", "lo", "up"],
                           ["route", "add", "default", "via", host_ip]]),
            (link.viewer_ns, [["addr", "add", f"{viewer_ip}/30", "dev", "eth0"],
                              ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"],
                              ["route", "add", "default", "via", nat_in]]),
        ):
            for command in commands:
                sh("ip", "-n", ns, *command)
        sh("ip", "netns", "exec", link.nat_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", link.nat_ns, "iptables", "-w", "-t", "nat", "-A",
           "POSTROUTING", "-o", host_out, "-j", "MASQUERADE")
        # The host: replies, and whatever allow_tcp/udp open; nothing else, either way.
        sh("iptables", "-w", "-N", link.chain)
        made_chain = True
        sh("iptables", "-w", "-A", link.chain, "-m", "conntrack", "--ctstate",
           "ESTABLISHED,RELATED", "-j", "ACCEPT")
        sh("iptables", "-w", "-A", link.chain, "-j", "DROP")
        sh("iptables", "-w", "-I", "INPUT", "1", "-i", link.host_if, "-j", link.chain)
        sh("iptables", "-w", "-I", "OUTPUT", "1", "-o", link.host_if, "-m", "conntrack",
           "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP")
        yield link
    finally:
        sh("iptables", "-w", "-D", "INPUT", "-i", link.host_if, "-j", link.chain, check=False)
        sh("iptables", "-w", "-D", "OUTPUT", "-o", link.host_if, "-m", "conntrack", "!",
           "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP", check=False)
        if made_chain:
            sh("iptables", "-w", "-F", link.chain, check=False)
            sh("iptables", "-w", "-X", link.chain, check=False)
        sh("ip", "link", "del", link.host_if, check=False)
        for ns in (link.viewer_ns, link.nat_ns):
            sh("ip", "netns", "del", ns, check=False)
        assert link.host_if not in sh("ip", "-o", "link").stdout
        assert link.viewer_ns not in sh("ip", "netns", "list").stdout


def start_coturn(link: NatLink, port: int, secret: str, log: Path) -> subprocess.Popen[bytes]:
    binary = require_binary("turnserver")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-n", "--listening-ip", link.host_ip, "--listening-port", str(port),
             "--relay-ip", link.host_ip, "--min-port", "49300", "--max-port", "49400",
             "--use-auth-secret", "--static-auth-secret", secret, "--realm", "visual-runtime",
             "--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout", "--simple-log",
             "--verbose", "--pidfile", str(log.with_suffix(".pid"))],
            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while b"listener opened on" not in log.read_bytes() and b"Total General servers" not in \
            log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_viewer(link: NatLink, base: str, sid: str, token: str, seconds: float,
               *extra: str) -> dict[str, object]:
    done = subprocess.run(
        ["ip", "netns", "exec", link.viewer_ns, sys.executable, "-m", "tests.turn.nat_viewer",
         base, sid, token, str(seconds), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(300)
async def test_a_viewer_behind_nat_gets_media_through_turn_only(
        nat_link: NatLink, tmp_path: Path) -> None:
    turn_port = random.randrange(33000, 34000)
    secret = secrets.token_urlsafe(24)
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(secret + "\n")
    nat_link.allow_tcp(turn_port)
    sh("iptables", "-w", "-I", nat_link.chain, "1", "-p", "udp", "--dport", str(turn_port),
       "-j", "ACCEPT")
    coturn = start_coturn(nat_link, turn_port, secret, tmp_path / "coturn.log")
    proc, base = start_served_gateway(
        tmp_path / "state", "--host", nat_link.host_ip, "--apps", "xterm",
        "--turn-url", f"turn:{nat_link.host_ip}:{turn_port}?transport=udp",
        "--turn-secret-file", str(secret_file), "--turn-ttl", "600")
    gw_port = int(base.rsplit(":", 1)[1])
    nat_link.allow_tcp(gw_port)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
            async with http.post(f"{base}/api/visual-sessions",
                                 json={"resolution": "800x600", "network": "none"}) as resp:
                created = await resp.json()
                assert resp.status == 201, created
            sid, view = created["session_id"], created["tokens"]["view"]
            async with http.get(f"{base}/api/visual-sessions/{sid}?wait=running") as resp:
                assert (await resp.json())["status"] == "running"

            # Behind the NAT with the minted TURN credentials: media over a relay.
            relayed = run_viewer(nat_link, base, sid, view, 45)
            assert relayed["status"] == 201 and relayed["frames"] >= 5, relayed
            assert relayed["pair"] == "relay", relayed
            (server,) = relayed["ice_servers"]  # type: ignore[misc]
            expiry, _, viewer_id = server["username"].partition(":")
            assert 500 < int(expiry) - time.time() <= 600 and viewer_id
            assert server["credential"] == turn_password(secret.encode(), server["username"])
            links = relayed["links"]
            assert any(f"<turn:{nat_link.host_ip}:{turn_port}?transport=udp>" in link
                       and 'rel="ice-server"' in link and 'credential-type="password"' in link
                       for link in links), links  # type: ignore[attr-defined]
            log = (tmp_path / "coturn.log").read_text(errors="replace")
            assert server["username"] in log, "coturn never saw the minted user"

            # The same viewer without ICE servers: no path, no media.
            direct = run_viewer(nat_link, base, sid, view, 12, "--no-ice-servers")
            assert direct["frames"] == 0, direct

            # The viewer page in Chromium inside the namespace: WebRTC through TURN, and the
            # WebSocket transport once the TURN server is gone.
            wrapper = tmp_path / "chromium-in-netns"
            wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {nat_link.viewer_ns} "
                               f"{require_binary('chromium')} \"$@\"\n")
            wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
            async with async_playwright() as p:
                # WebCodecs (the WebSocket transport) needs a secure context; the test's
                # gateway serves plain HTTP on a non-localhost address.
                browser = await p.chromium.launch(executable_path=str(wrapper), args=[
                    *CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={base}"])
                try:
                    page = await browser.new_page()
                    await page.goto(f"{base}/sessions/{sid}/?token={view}")
                    assert await wait_connected(page, timeout_s=60) == "webrtc"
                    await page.close()
                    stop(coturn)
                    page = await browser.new_page()
                    await page.goto(f"{base}/sessions/{sid}/?token={view}")
                    assert await wait_connected(page, timeout_s=90) == "ws", \
                        await page.evaluate("vrViewer.attempts")
                finally:
                    await browser.close()
    finally:
        stop_served_gateway(proc)
        stop(coturn)
