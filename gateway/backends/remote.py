"""How the gateway reaches a runtime agent: a unix socket, or TCP+TLS (:mod:`wire.remote`).

A backend reports an :class:`AgentEndpoint` per pod. Backends whose agents run
on the gateway's machine keep the unix socket; the ``swarm`` backend reports
the node's address and port, the session's secret and the certificate the
gateway made for that session, which the link pins (no CA, no host name
check against DNS: the certificate itself is the identity).
"""

from __future__ import annotations

import datetime
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wire import remote

__all__ = ["AgentEndpoint", "LinkCredentials", "client_ssl_context", "new_credentials"]


@dataclass(frozen=True)
class AgentEndpoint:
    """One runtime agent's address: ``socket`` or (``host``, ``port``, ``secret``)."""

    socket: Path | None = None
    host: str = ""
    port: int = 0
    secret: str = ""
    cert_pem: str = ""
    """The agent's certificate (pinned); empty: plain TCP (one machine only)."""
    ice_addresses: tuple[str, ...] = ()
    """The node's reachable addresses, the only ICE host candidates the agent offers
    (empty: all of the node's)."""

    def __post_init__(self) -> None:
        if self.socket is None and not (self.host and self.port and self.secret):
            raise ValueError("an agent endpoint is a socket or host, port and secret")

    @property
    def base_url(self) -> str:
        if self.socket is not None:
            return "http://agent"
        scheme = "https" if self.cert_pem else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """Headers every request to this agent carries (the secret over TCP)."""
        headers = {remote.AUTHORIZATION: remote.bearer(self.secret)} if self.secret else {}
        if self.ice_addresses:
            headers[remote.ICE_ADDRESSES_HEADER] = ",".join(self.ice_addresses)
        return headers

    def describe(self) -> str:
        return str(self.socket) if self.socket is not None else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LinkCredentials:
    """What the gateway makes for one session and gives to its agent alone."""

    secret: str
    cert_pem: str
    key_pem: str

    @property
    def bundle_pem(self) -> str:
        """Key and certificate in one PEM file (the agent's ``--tls-bundle``)."""
        return self.key_pem + self.cert_pem


def new_credentials(session_id: str, days: int = 30) -> LinkCredentials:
    """A fresh 256-bit secret and a self-signed P-256 certificate for one session."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vr-agent-{session_id}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(remote.TLS_SERVER_NAME)]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return LinkCredentials(
        secret=secrets.token_urlsafe(32),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode(),
    )


def client_ssl_context(cert_pem: str) -> ssl.SSLContext:
    """Trust exactly *cert_pem*, under the name :data:`wire.remote.TLS_SERVER_NAME`."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cert_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
