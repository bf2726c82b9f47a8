"""The runtime agent's TCP listener for a gateway on another machine (:mod:`wire.remote`).

The same HTTP application as on the unix socket, served a second time over
TCP with TLS (the session's own key and certificate) and behind a check of the
session's secret. Requests that arrive over the unix socket are not checked:
the socket's file permissions already admit only the gateway.

The secret and the PEM bundle (key and certificate) are files the agent reads
once at start; in the swarm backend they are Swarm secrets that only the
agent's uid can read.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from wire import remote

from .errors import AgentSideError
from .files_link import add_routes as add_files_routes
from .ice import set_advertised_addresses
from .mirror import add_routes as add_mirror_routes

logger = logging.getLogger(__name__)

__all__ = ["RemoteListener", "add_arguments", "attach", "auth_middleware", "listener_from",
           "load_secret", "mirror_from", "server_ssl_context", "start_tcp_site"]


@dataclass(frozen=True)
class RemoteListener:
    """Where and how to serve the TCP link."""

    host: str
    port: int
    secret: str
    tls_bundle: Path | None
    """PEM file with the private key and the certificate; None serves plain TCP
    (only for a link that never leaves one machine)."""
    files_socket: Path | None = None
    """The shared folder's server in the pod (:mod:`agent_side.files_link`)."""


def load_secret(path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as e:
        raise AgentSideError(f"cannot read the link secret {path}: {e}") from e
    if len(secret) < 32:
        raise AgentSideError(f"the link secret in {path} is shorter than 32 characters")
    return secret


def server_ssl_context(bundle: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(bundle))
    except (OSError, ssl.SSLError) as e:
        raise AgentSideError(f"cannot load the TLS key and certificate {bundle}: {e}") from e
    return context


def _over_tcp(request: web.Request) -> bool:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return isinstance(peer, tuple)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(secret: str) -> Middleware:
    """Refuse every TCP request whose ``Authorization`` is not the session's secret."""
    expected = remote.bearer(secret).encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _over_tcp(request):
            given = request.headers.get(remote.AUTHORIZATION, "").encode()
            if not hmac.compare_digest(given, expected):
                logger.warning("refused a link request without the session secret from %s",
                               request.remote)
                return web.json_response(
                    {"error": remote.UNAUTHORIZED_ERROR,
                     "detail": "this runtime agent answers its gateway only"},
                    status=401, headers={"WWW-Authenticate": remote.AUTH_SCHEME})
            addresses = request.headers.get(remote.ICE_ADDRESSES_HEADER)
            if addresses is not None and set_advertised_addresses(addresses.split(",")):
                logger.info("ICE host candidates: only %s (the node's configured addresses)",
                            addresses or "(all)")
        return await handler(request)

    return check


async def start_tcp_site(runner: web.AppRunner, listener: RemoteListener) -> web.TCPSite:
    context = server_ssl_context(listener.tls_bundle) if listener.tls_bundle else None
    site = web.TCPSite(runner, listener.host, listener.port, ssl_context=context,
                       reuse_address=True)
    await site.start()
    logger.info("runtime agent link on %s:%d (%s)", listener.host, listener.port,
                "TLS" if context else "plain TCP")
    return site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The link's flags on the runtime agent's command line."""
    parser.add_argument("--listen", default=None, metavar="HOST:PORT",
                        help="also serve over TCP for a gateway on another machine "
                             "(needs --secret-file; TLS with --tls-bundle)")
    parser.add_argument("--secret-file", type=Path, default=None,
                        help="file with the session's link secret (wire.remote)")
    parser.add_argument("--tls-bundle", type=Path, default=None,
                        help="PEM file with the link's private key and certificate")
    parser.add_argument("--files-socket", type=Path, default=None,
                        help="unix socket of the session's shared-folder server in the pod: "
                             f"relayed as {remote.FILES} on the link (needs --listen)")
    parser.add_argument("--mirror", action="append", default=[], metavar="KIND=DIR",
                        help="serve DIR's files to the gateway for copying "
                             f"(KIND: {', '.join(remote.MIRROR_KINDS)}); repeatable")


def listener_from(args: argparse.Namespace, parser: argparse.ArgumentParser
                  ) -> RemoteListener | None:
    if args.listen is None:
        if args.secret_file or args.tls_bundle or args.files_socket:
            parser.error("--secret-file, --tls-bundle and --files-socket need --listen")
        return None
    host, _, port = str(args.listen).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        parser.error(f"--listen must be HOST:PORT, not {args.listen!r}")
    if args.secret_file is None:
        parser.error("--listen needs --secret-file: the link is never open without a secret")
    try:
        secret = load_secret(args.secret_file)
    except AgentSideError as e:
        parser.error(str(e))
    return RemoteListener(host.strip("[]"), int(port), secret, args.tls_bundle,
                          args.files_socket)


def mirror_from(args: argparse.Namespace, parser: argparse.ArgumentParser
                ) -> tuple[tuple[str, Path], ...]:
    folders = []
    for item in args.mirror:
        kind, _, folder = str(item).partition("=")
        if kind not in remote.MIRROR_KINDS or not folder:
            parser.error(f"--mirror must be KIND=DIR with KIND in {remote.MIRROR_KINDS}, "
                         f"not {item!r}")
        folders.append((kind, Path(folder)))
    return tuple(folders)


def attach(app: web.Application, listen: RemoteListener | None,
           mirror: tuple[tuple[str, Path], ...]) -> None:
    """Before the app is set up: the secret check (when listening) and the mirror routes."""
    if listen is not None:
        app.middlewares.append(auth_middleware(listen.secret))
        if listen.files_socket is not None:
            add_files_routes(app, listen.files_socket)
    if mirror:
        add_mirror_routes(app, dict(mirror))
