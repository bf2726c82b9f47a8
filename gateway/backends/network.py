"""Per-session network namespaces for ``network: "egress"``.

Each egress session gets a network namespace ``vr-<session>`` joined to the
host by a veth pair on a private /30 (``10.231.0.0/16``), with NAT out. Our
own iptables chains, hooked into INPUT and FORWARD for ``vrh+`` interfaces:

* ``VR-INPUT``: everything a session sends to the host itself is dropped, so
  the gateway, the runtime agents and any other host service are unreachable
  (loopback inside the namespace is the session's own);
* ``VR-FORWARD``: traffic from one session to another, to link-local
  (cloud metadata) addresses, and connections the host DNAT-ed (ports published
  by Docker, Kubernetes NodePorts: they would otherwise reach host services
  through FORWARD) are dropped; other outbound traffic is allowed;
  inbound traffic to a session is allowed only for connections it opened.

IPv6: sessions get none. IPv6 is disabled on both ends of the veth (no
link-local ``fe80::`` address either, which would otherwise reach every host
service listening on ``[::]``), and ``ip6tables`` chains ``VR6-INPUT`` and
``VR6-FORWARD`` drop all IPv6 from and to ``vrh+`` links in case something
re-enables it (defence in depth: the IPv4 rules have no IPv6 twin to allow).

``network: "none"`` needs none of this: the sandbox gets an empty namespace
with only loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError

logger = logging.getLogger(__name__)

SUBNET = ipaddress.ip_network("10.231.0.0/16")
NETNS_PREFIX = "vr-"
_CHAIN_IN = "VR-INPUT"
_CHAIN_FWD = "VR-FORWARD"
# Rules as `iptables -S` prints them, so the live chains can be compared.
_CHAINS: dict[str, list[str]] = {
    _CHAIN_IN: ["-j DROP"],
    _CHAIN_FWD: [
        "-i vrh+ -o vrh+ -j DROP",
        "-d 169.254.0.0/16 -i vrh+ -j DROP",
        "-i vrh+ -j ACCEPT",
        "-o vrh+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-o vrh+ -j DROP",
    ],
}
_CHAIN6_IN = "VR6-INPUT"
_CHAIN6_FWD = "VR6-FORWARD"
_CHAINS6: dict[str, list[str]] = {_CHAIN6_IN: ["-j DROP"], _CHAIN6_FWD: ["-j DROP"]}
_HOOKS6: list[tuple[str, str, list[str]]] = [
    ("filter", "INPUT", ["-i", "vrh+", "-j", _CHAIN6_IN]),
    ("filter", "FORWARD", ["-i", "vrh+", "-j", _CHAIN6_FWD]),
    ("filter", "FORWARD", ["-o", "vrh+", "-j", _CHAIN6_FWD]),
]
_IPV6 = Path("/proc/sys/net/ipv6")
"""Absent when the kernel runs without IPv6 (``ipv6.disable=1``): nothing to do then."""
_DNAT_DROP = ["-i", "vrh+", "-m", "conntrack", "--ctstate", "DNAT", "-j", "DROP"]
_HOOKS: list[tuple[str, str, list[str]]] = [
    # A host port published by Docker (or a NodePort) is DNAT-ed in PREROUTING, before
    # any filter rule: it reaches FORWARD with the container's address as destination,
    # never INPUT. No session connection has a reason to be DNAT-ed. (A hook of its
    # own, so a gateway of an older version rebuilding VR-FORWARD keeps it.)
    ("filter", "FORWARD", _DNAT_DROP),
    ("filter", "INPUT", ["-i", "vrh+", "-j", _CHAIN_IN]),
    ("filter", "FORWARD", ["-i", "vrh+", "-j", _CHAIN_FWD]),
    ("filter", "FORWARD", ["-o", "vrh+", "-j", _CHAIN_FWD]),
    ("nat", "POSTROUTING", ["-s", str(SUBNET), "!", "-d", str(SUBNET), "-j", "MASQUERADE"]),
]


async def run(*argv: str, check: bool = True) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if check and proc.returncode != 0:
        raise BackendError(f"{' '.join(argv)} failed ({proc.returncode}): {text}")
    return proc.returncode or 0, text


@dataclass(frozen=True)
class Egress:
    """Names and addresses of one session's egress network."""

    netns: str
    host_if: str
    host_ip: str
    sandbox_ip: str

    @classmethod
    def for_slot(cls, session_id: str, slot: int) -> Egress:
        base = int(SUBNET.network_address) + slot * 4
        if base + 3 > int(SUBNET.broadcast_address):
            raise BackendError(f"no egress subnet left for slot {slot}")
        return cls(
            netns=NETNS_PREFIX + session_id,
            host_if=f"vrh{slot}",
            host_ip=str(ipaddress.ip_address(base + 1)),
            sandbox_ip=str(ipaddress.ip_address(base + 2)),
        )


class EgressManager:
    """Creates and removes egress namespaces; owns the shared firewall chains."""

    def __init__(self, deny: tuple[str, ...] = ()) -> None:
        self._lock = asyncio.Lock()
        self._deny = deny
        """Networks egress sessions never reach (``GatewayConfig.egress_deny``)."""

    async def _ensure_rules(self) -> None:
        """Make the shared chains and hooks exactly what they must be.

        Checked before every namespace is created (another gateway on the
        machine, or an operator, may have changed them). Chains are only
        rebuilt when their content differs, so a live session is never left
        without its rules.
        """
        await run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        await _ensure_chains("iptables", _CHAINS, _HOOKS)
        # dockerd puts its own FORWARD rules (which accept DNAT-ed published ports)
        # first whenever it restarts; only DOCKER-USER is guaranteed to come before.
        code, _ = await run("iptables", "-w", "-L", "DOCKER-USER", "-n", check=False)
        if code == 0:
            await _ensure_chains("iptables", {}, [("filter", "DOCKER-USER", _DNAT_DROP)])
        if _IPV6.is_dir():
            await _ensure_chains("ip6tables", _CHAINS6, _HOOKS6)

    async def create(self, egress: Egress) -> None:
        await self.remove(egress)
        await create_namespace(egress.netns)
        await self.connect(egress)

    async def connect(self, egress: Egress) -> None:
        """Join an existing (empty) namespace to the host: the veth pair, routes, NAT.

        A pooled pod's sandbox runs in an empty namespace from the start; this is
        what a claim for an ``egress`` session adds."""
        await self.deny(egress, self._deny)
        async def rules() -> None:
            async with self._lock:
                await self._ensure_rules()

        # The rules check (a dozen iptables calls) runs beside the link set-up; the
        # default route, without which nothing leaves the namespace, comes after both
        # (a pooled pod's apps already run in it).
        checked = asyncio.create_task(rules())
        try:
            await self._link(egress)
        finally:
            await checked
        await run("ip", "-n", egress.netns, "route", "add", "default", "via", egress.host_ip)
        logger.info("egress network %s up: %s via %s", egress.netns, egress.sandbox_ip,
                    egress.host_ip)

    async def _link(self, egress: Egress) -> None:
        ns = egress.netns
        peer = egress.host_if.replace("vrh", "vrs", 1)
        await run("ip", "link", "delete", egress.host_if, check=False)
        await run("ip", "link", "add", egress.host_if, "type", "veth", "peer", "name", peer)
        if _IPV6.is_dir():  # before the links come up: not even a link-local address
            await run("sysctl", "-q", "-w", f"net.ipv6.conf.{egress.host_if}.disable_ipv6=1")
            await run("sysctl", "-q", "-w", f"net.ipv6.conf.{peer}.disable_ipv6=1")
        await run("ip", "link", "set", peer, "netns", ns)
        if _IPV6.is_dir():  # the move resets the link's settings to the namespace's defaults
            await run("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                      "net.ipv6.conf.default.disable_ipv6=1",
                      f"net.ipv6.conf.{peer}.disable_ipv6=1")
        await run("ip", "addr", "add", f"{egress.host_ip}/30", "dev", egress.host_if)
        await run("ip", "link", "set", egress.host_if, "up")
        await run("ip", "-n", ns, "addr", "add", f"{egress.sandbox_ip}/30", "dev", peer)
        await run("ip", "-n", ns, "link", "set", peer, "up")

    async def deny(self, egress: Egress, networks: tuple[str, ...]) -> None:
        """Drop the session's traffic to *networks* (the gateway's ``egress_deny``).

        A chain of the session's own (``VR-DENY-vrh<n>``), hooked first in FORWARD
        and in DOCKER-USER (which dockerd keeps before its own accepting rules) for
        its host interface; set before the link exists, so no packet passes first."""
        chain = _deny_chain(egress)
        await run("iptables", "-w", "-N", chain, check=False)
        await run("iptables", "-w", "-F", chain)
        for network in networks:
            await run("iptables", "-w", "-A", chain, "-d", network, "-j", "DROP")
        spec = ["-i", egress.host_if, "-j", chain]
        for parent in await _deny_parents():
            code, _ = await run("iptables", "-w", "-C", parent, *spec, check=False)
            if code != 0:
                await run("iptables", "-w", "-I", parent, "1", *spec)

    async def undeny(self, egress: Egress) -> None:
        """Unhook and delete the chain :meth:`deny` made for *egress* (if any)."""
        chain = _deny_chain(egress)
        spec = ["-i", egress.host_if, "-j", chain]
        for parent in await _deny_parents():
            while (await run("iptables", "-w", "-D", parent, *spec, check=False))[0] == 0:
                pass
        await run("iptables", "-w", "-F", chain, check=False)
        await run("iptables", "-w", "-X", chain, check=False)

    async def remove(self, egress: Egress) -> None:
        """Delete the namespace (its veth end goes with it, and so does the host end)."""
        await self.undeny(egress)
        if Path("/run/netns", egress.netns).exists():
            await run("ip", "netns", "delete", egress.netns, check=False)
        await run("ip", "link", "delete", egress.host_if, check=False)

    async def aclose(self) -> None:
        """Nothing to release: the chains stay (inert without ``vrh+`` links) because
        other gateways on this machine, or re-adopted sessions, rely on them."""


def _deny_chain(egress: Egress) -> str:
    return f"VR-DENY-{egress.host_if}"


async def _deny_parents() -> list[str]:
    code, _ = await run("iptables", "-w", "-L", "DOCKER-USER", "-n", check=False)
    return ["FORWARD", "DOCKER-USER"] if code == 0 else ["FORWARD"]


async def create_namespace(netns: str) -> None:
    """An empty network namespace with loopback up (what ``network: "none"`` sees)."""
    await run("ip", "netns", "add", netns)
    await run("ip", "-n", netns, "link", "set", "lo", "up")


async def delete_namespace(netns: str) -> None:
    if Path("/run/netns", netns).exists():
        await run("ip", "netns", "delete", netns, check=False)


async def _ensure_chains(binary: str, chains: dict[str, list[str]],
                         hooks: list[tuple[str, str, list[str]]]) -> None:
    """Make *binary*'s (iptables, ip6tables) *chains* and *hooks* exactly what they must be."""
    for chain, rules in chains.items():
        await run(binary, "-w", "-N", chain, check=False)
        _, current = await run(binary, "-w", "-S", chain)
        want = [f"-N {chain}"] + [f"-A {chain} {r}" for r in rules]
        if [line.strip() for line in current.splitlines()] != want:
            await run(binary, "-w", "-F", chain)
            for rule in rules:
                await run(binary, "-w", "-A", chain, *rule.split())
    for table, chain, spec in hooks:
        code, _ = await run(binary, "-w", "-t", table, "-C", chain, *spec, check=False)
        if code != 0:
            await run(binary, "-w", "-t", table, "-I", chain, "1", *spec)


def list_namespaces() -> list[str]:
    d = Path("/run/netns")
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.name.startswith(NETNS_PREFIX))


def resolv_conf() -> str:
    """Name servers a sandbox can use: the host's, minus loopback ones."""
    servers: list[str] = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    if not ipaddress.ip_address(parts[1]).is_loopback:
                        servers.append(parts[1])
                except ValueError:
                    continue
    except OSError:
        pass
    return "".join(f"nameserver {s}\n" for s in servers) or "# no usable name server\n"
