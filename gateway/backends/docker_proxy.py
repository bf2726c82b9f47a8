"""A narrow Docker socket: only the Engine API calls the docker backend makes.

``python -m gateway.backends.docker_proxy`` listens on a unix socket and
forwards to the real engine socket. In the docker-compose deployment the
gateway container gets this socket, never the engine's (which is root on the
host for whoever controls the gateway process). See docs/docker.md.

What passes (``/vX.Y`` prefixes are ignored), everything else is 403:

* ``GET``/``HEAD /_ping``, ``GET /version``, ``GET /info`` (the registered
  runtimes, for ``--docker-runtime``), ``GET /images/{image}/json`` of
  the allowed images;
* ``POST /containers/create`` when the body passes :func:`check_container`:
  an allowed image, the image's own entry point with role ``app`` or
  ``agent``, a non-root user, Visual Runtime's labels, ``no-new-privileges``,
  no added capabilities, devices, host PID/user/UTS/IPC/cgroup namespaces,
  published ports, volumes or legacy binds; bind mounts only from below the
  allowed roots (the state and runtime folders; symlinks resolved); network
  ``none``, ``host`` (the runtime agent, for reachable ICE candidates) or a
  Visual Runtime network; only the ``disable_ipv6`` sysctls;
* ``POST /networks/create`` of a bridge with Visual Runtime's labels;
* listing containers and networks filtered by a Visual Runtime label;
* inspect, start, stop, kill, wait, logs and delete of containers, and
  inspect and delete of networks, that carry Visual Runtime's gateway label
  (looked up on the engine first).

Known limit: a bind source is checked, then the engine resolves it; a process
that can write the state folder could swap a checked folder for a symlink in
between. The proxy narrows the socket; it is not a second sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

__all__ = ["Policy", "Refused", "check_container", "check_network", "main"]

logger = logging.getLogger(__name__)

LABEL_PREFIX = "visual-runtime."
LABEL_GATEWAY = "visual-runtime.gateway"
REQUIRED_LABELS = ("visual-runtime.session", "visual-runtime.role", LABEL_GATEWAY)
ROLES = frozenset({"app", "agent"})
NETWORK_PREFIX = "vr-"
ALLOWED_SYSCTLS = frozenset({"net.ipv6.conf.all.disable_ipv6",
                             "net.ipv6.conf.default.disable_ipv6"})
UNCONFINED = ("seccomp=unconfined", "seccomp:unconfined", "apparmor=unconfined",
              "apparmor:unconfined", "label=disable", "label:disable",
              "systempaths=unconfined")
MAX_BODY = 4 * 1024 * 1024
_VERSION = re.compile(r"^/v\d+(\.\d+)?(?=/)")
_OWNED_CONTAINER = re.compile(r"^/containers/([^/]+)(/json|/start|/stop|/kill|/wait|/logs|)$")
_OWNED_NETWORK = re.compile(r"^/networks/([^/]+)$")
_IMAGE = re.compile(r"^/images/(.+)/json$")


class Refused(Exception):
    """A call the narrow socket does not allow (answered 403 with the reason)."""


@dataclass(frozen=True)
class Policy:
    images: frozenset[str]
    """Image references a container may be created from (as the gateway names them)."""
    mount_roots: tuple[Path, ...]
    """Folders bind-mount sources must be inside (the state and runtime folders)."""
    runtimes: frozenset[str] = frozenset()
    """OCI runtimes a container may ask for besides the default (e.g. ``runsc``)."""


def _under(path: str, roots: Iterable[Path]) -> bool:
    p = Path(os.path.normpath(path))
    return p.is_absolute() and any(p == r or r in p.parents for r in roots)


def check_container(body: Any, policy: Policy) -> None:
    """Raise :class:`Refused` unless a ``POST /containers/create`` body is one of ours."""
    if not isinstance(body, dict):
        raise Refused("the body is not a JSON object")
    if body.get("Image") not in policy.images:
        raise Refused(f"image {body.get('Image')!r} is not allowed")
    if body.get("Entrypoint") not in (None, [], ""):
        raise Refused("the image's entry point may not be replaced")
    cmd = body.get("Cmd") or []
    if not isinstance(cmd, list) or not cmd or cmd[0] not in ROLES:
        raise Refused("the command must be the image's 'app' or 'agent' role")
    user = str(body.get("User") or "")
    if user.split(":")[0] in ("", "0", "root"):
        raise Refused("containers must run as a non-root user")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or any(not labels.get(k) for k in REQUIRED_LABELS):
        raise Refused(f"containers must carry the labels {', '.join(REQUIRED_LABELS)}")
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise Refused("HostConfig is not an object")
    for key in ("Privileged", "PublishAllPorts", "OomKillDisable"):
        if host.get(key):
            raise Refused(f"{key} is not allowed")
    for key in ("CapAdd", "Devices", "DeviceRequests", "DeviceCgroupRules", "Binds",
                "VolumesFrom", "Links", "PortBindings", "VolumeDriver", "CgroupParent"):
        if host.get(key):
            raise Refused(f"{key} is not allowed")
    for key in ("PidMode", "UsernsMode", "UTSMode", "CgroupnsMode", "Cgroup"):
        if host.get(key) not in (None, "", "private"):
            raise Refused(f"{key}={host.get(key)!r} is not allowed")
    ipc = str(host.get("IpcMode") or "")
    if ipc not in ("", "private", "none", "shareable") and not ipc.startswith("container:"):
        raise Refused(f"IpcMode={ipc!r} is not allowed")
    network = str(host.get("NetworkMode") or "")
    if network not in ("none", "host") and not network.startswith(NETWORK_PREFIX):
        raise Refused(f"NetworkMode={network!r} is not allowed")
    runtime = host.get("Runtime")
    if runtime not in (None, "", "runc") and runtime not in policy.runtimes:
        raise Refused(f"runtime {runtime!r} is not allowed")
    security = [str(s) for s in host.get("SecurityOpt") or []]
    if "no-new-privileges" not in security and "no-new-privileges:true" not in security:
        raise Refused("containers must run with no-new-privileges")
    if any(s.startswith(UNCONFINED) for s in security):
        raise Refused("unconfined security options are not allowed")
    sysctls = host.get("Sysctls") or {}
    if not isinstance(sysctls, dict) or set(sysctls) - ALLOWED_SYSCTLS:
        raise Refused("only the disable_ipv6 sysctls are allowed")
    for mount in host.get("Mounts") or []:
        _check_mount(mount, policy)
    if body.get("Volumes"):
        raise Refused("anonymous volumes are not allowed")


def _check_mount(mount: Any, policy: Policy) -> None:
    if not isinstance(mount, dict):
        raise Refused("a mount is not an object")
    kind = mount.get("Type")
    if kind == "tmpfs":
        return
    if kind != "bind":
        raise Refused(f"{kind!r} mounts are not allowed")
    source = str(mount.get("Source") or "")
    if not _under(source, policy.mount_roots):
        raise Refused(f"bind mount of {source!r} is outside the allowed folders")
    if os.path.lexists(source) and not _under(os.path.realpath(source), policy.mount_roots):
        raise Refused(f"bind mount of {source!r} resolves outside the allowed folders")


def check_network(body: Any) -> None:
    """Raise :class:`Refused` unless a ``POST /networks/create`` body is one of ours."""
    if not isinstance(body, dict):
        raise Refused("the body is not a JSON object")
    if not str(body.get("Name", "")).startswith(NETWORK_PREFIX):
        raise Refused(f"networks must be named {NETWORK_PREFIX}*")
    if body.get("Driver", "bridge") != "bridge":
        raise Refused("only bridge networks are allowed")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not labels.get(LABEL_GATEWAY):
        raise Refused(f"networks must carry the label {LABEL_GATEWAY}")
    options = body.get("Options") or {}
    if any(not str(k).startswith("com.docker.network.bridge.") for k in options):
        raise Refused("only com.docker.network.bridge.* options are allowed")


def _label_filtered(query: Any) -> bool:
    try:
        filters = json.loads(query.get("filters", "{}"))
    except ValueError:
        return False
    labels = filters.get("label") if isinstance(filters, dict) else None
    if isinstance(labels, dict):
        labels = list(labels)
    return isinstance(labels, list) and bool(labels) and all(
        str(label).startswith(LABEL_PREFIX) for label in labels)


class DockerProxy:
    """The aiohttp application: check, then forward to the engine's socket."""

    def __init__(self, upstream: str, policy: Policy) -> None:
        self.policy = policy
        self._http = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=upstream),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        self.refused = 0

    async def aclose(self) -> None:
        await self._http.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = _VERSION.sub("", request.path)
        body = await request.read() if request.can_read_body else b""
        try:
            if len(body) > MAX_BODY:
                raise Refused("request body too large")
            await self._check(request.method, path, request.query, body)
        except Refused as e:
            self.refused += 1
            logger.warning("refused %s %s: %s", request.method, request.path, e)
            return web.json_response({"message": f"refused by the Visual Runtime docker "
                                                 f"proxy: {e}"}, status=403)
        return await self._forward(request, body)

    async def _check(self, method: str, path: str, query: Any, body: bytes) -> None:
        if method in ("GET", "HEAD") and path in ("/_ping", "/version", "/info"):
            return
        if method == "GET" and (m := _IMAGE.match(path)):
            if unquote(m.group(1)) not in self.policy.images:
                raise Refused("only the session image may be inspected")
            return
        if method == "POST" and path == "/containers/create":
            spec = _json(body)
            check_container(spec, self.policy)
            logger.info("allowed: create %s container of session %s (%s)",
                        spec["Labels"]["visual-runtime.role"],
                        spec["Labels"]["visual-runtime.session"], spec["Image"])
            return
        if method == "POST" and path == "/networks/create":
            check_network(_json(body))
            return
        if method == "GET" and path in ("/containers/json", "/networks"):
            if not _label_filtered(query):
                raise Refused("listings must be filtered by a visual-runtime.* label")
            return
        m = _OWNED_CONTAINER.match(path)
        if m and (method, m.group(2)) in {("GET", "/json"), ("POST", "/start"),
                                          ("POST", "/stop"), ("POST", "/kill"),
                                          ("POST", "/wait"), ("GET", "/logs"), ("DELETE", "")}:
            await self._check_owned("containers", m.group(1))
            return
        m = _OWNED_NETWORK.match(path)
        if m and method in ("GET", "DELETE"):
            await self._check_owned("networks", m.group(1))
            return
        raise Refused("this Engine API call is not used by Visual Runtime")

    async def _check_owned(self, kind: str, name: str) -> None:
        async with self._http.get(f"http://docker/{kind}/{name}" +
                                  ("/json" if kind == "containers" else "")) as resp:
            if resp.status == 404:
                return  # the engine answers 404 itself
            info = await resp.json() if resp.status == 200 else {}
        labels = (info.get("Config", {}) if kind == "containers" else info).get("Labels") or {}
        if not labels.get(LABEL_GATEWAY):
            raise Refused(f"{kind[:-1]} {name!r} is not Visual Runtime's")

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._http.request(request.method, "http://docker" + request.path_qs,
                                      data=body or None, headers=headers) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise Refused(f"the body is not JSON: {e}") from e


async def serve(listen: Path, upstream: str, policy: Policy) -> None:
    proxy = DockerProxy(upstream, policy)
    app = web.Application(client_max_size=MAX_BODY + 1)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listen.parent.mkdir(parents=True, exist_ok=True)
    listen.unlink(missing_ok=True)
    await web.UnixSite(runner, str(listen)).start()
    os.chmod(listen, 0o660)
    logger.info("docker proxy on %s -> %s (images %s, mounts below %s)", listen, upstream,
                ", ".join(sorted(policy.images)), ", ".join(map(str, policy.mount_roots)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await proxy.aclose()
        listen.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.backends.docker_proxy",
                                     description="Visual Runtime's narrow Docker socket")
    parser.add_argument("--listen", type=Path, required=True, help="unix socket to serve")
    parser.add_argument("--upstream", default="/var/run/docker.sock", help="the engine's socket")
    parser.add_argument("--image", action="append", required=True,
                        help="an image sessions may use (repeatable)")
    parser.add_argument("--mount-root", action="append", type=Path, required=True,
                        help="a folder bind-mount sources must be inside (repeatable)")
    parser.add_argument("--runtime", action="append", default=[],
                        help="an OCI runtime containers may ask for (e.g. runsc)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s docker-proxy %(message)s")
    policy = Policy(frozenset(args.image), tuple(Path(os.path.normpath(r)) for r in args.mount_root),
                    frozenset(args.runtime))
    asyncio.run(serve(args.listen, args.upstream, policy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
