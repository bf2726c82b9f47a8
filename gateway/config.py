"""Gateway configuration, built once from flags and ``VISUAL_RUNTIME_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wire.agent_api import BITRATE_POLICIES, VIEWER_LIMITS

ENV_PREFIX = "VISUAL_RUNTIME_"
DEFAULT_APPS = ("fluxbox", "xterm", "chromium")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The viewer page, its ES modules and the vendored noVNC (served by gateway.http.viewer)."""


EGRESS_DENY_DEFAULT: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "100.100.100.200/32", "168.63.129.16/32")
"""IPv4 networks egress sessions never reach by default: private LAN/VPC ranges (the
host's Docker bridges among them), carrier-grade NAT, and the cloud metadata services
outside link-local (Alibaba, Azure). Link-local (169.254/16) is always dropped."""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway and its backends need; immutable after start-up."""

    host: str = "127.0.0.1"
    """Address the HTTP server binds."""
    port: int = 3000
    """TCP port of the one gateway port (0 picks a free one)."""
    backend: str = "local"
    """Session backend: ``local`` (bubblewrap, no daemon), ``docker`` or ``swarm``."""
    state_dir: Path = Path("state")
    """SQLite database, API token, session folders, logs and recordings."""
    runtime_dir: Path = Path("/run/visual-runtime")
    """Sockets of live pods (X and runtime agent); kept short for unix socket paths."""
    token: str | None = None
    """API token; generated and stored in ``state_dir/api-token`` when None."""
    max_sessions: int = 8
    """Sessions that may be live at once; more gives 503 with Retry-After."""
    tls_cert: Path | None = None
    """PEM certificate; with ``tls_key`` the gateway serves HTTPS."""
    tls_key: Path | None = None
    """PEM private key for ``tls_cert``."""
    apps: tuple[str, ...] = DEFAULT_APPS
    """Programs started in each app sandbox after Xvfb (subset of fluxbox, xterm, chromium)."""
    session_memory_mb: int = 2048
    """Memory limit of one app sandbox (cgroup)."""
    session_cpus: float = 1.0
    """CPU limit of one app sandbox in cores (cgroup quota)."""
    session_pids: int = 512
    """Process/thread limit of one app sandbox (cgroup)."""
    session_disk_mb: int = 2048
    """Size of each session's own filesystem (HOME and the shared folder; a loop-mounted
    image, ``gateway.backends.session_disk``) on ``local`` and ``docker``; 0: none (they
    sit on the state filesystem without a limit)."""
    start_timeout_s: float = 30.0
    """A pod that is not serving frames after this long is failed."""
    minute_s: float = 60.0
    """Length of one "minute" of ``timeout_minutes``/``idle_timeout_minutes`` (tests shorten it)."""
    poll_interval_s: float = 1.0
    """How often live sessions are checked (liveness, idle, timeouts)."""
    uid_base: int = 200_000
    """First uid of the per-session users (two per slot: app, runtime agent)."""
    docker_image: str = "visual-runtime-session:latest"
    """Session image of the ``docker`` backend (built by ``container/build.sh``)."""
    docker_seccomp_profile: Path | None = None
    """Seccomp profile (JSON file) of docker app containers; None: container/seccomp-chromium.json."""
    docker_runtime: str = "runc"
    """OCI runtime of docker app containers: ``runc``, or ``runsc`` for gVisor (registered with dockerd)."""
    swarm_constraints: tuple[str, ...] = ("node.labels.visual-runtime==session",)
    """Placement constraints of swarm session services (docs/swarm.md)."""
    swarm_spread: str = "node.labels.visual-runtime.zone"
    """Placement preference: spread sessions over this node label's values ("" for none)."""
    swarm_link_port: int = 17100
    """First TCP port of the runtime agents' link on swarm nodes (a session uses this + slot)."""
    swarm_reserve_cpus: float = 0.5
    """CPU cores swarm reserves per session (placement and capacity)."""
    swarm_reserve_memory_mb: int = 1024
    """Memory swarm reserves per session (placement and capacity)."""
    ice_port_min: int | None = None
    """Lowest UDP port for WebRTC media (with ``ice_port_max``), for firewalls."""
    ice_port_max: int | None = None
    """Highest UDP port for WebRTC media."""
    max_upload_mb: int = 512
    """Largest file accepted by ``PUT .../files/{path}``."""
    upload_scan_command: str | None = None
    """Run on every upload (``{path}`` is replaced by the file); non-zero exit quarantines it."""
    upload_scan_timeout_s: float = 120.0
    """A scanner that runs longer than this counts as a failed scan (quarantine)."""
    recording_max_age_hours: float = 168.0
    """Recordings of ended sessions older than this are deleted (0 keeps them forever)."""
    recording_quota_mb: int = 10240
    """Total size of all recordings; over it, the oldest ended sessions' go first (0: no quota)."""
    recording_min_free_mb: int = 256
    """A session stops recording (and goes on) when less disk space than this is free."""
    retention_interval_s: float = 60.0
    """How often recording retention (age, quota) is enforced."""
    agent_restarts: int = 0
    """Times a session's dead runtime agent is restarted in the same pod (the desktop and
    its apps keep running) before the session fails; 0 never restarts it."""
    auth_failure_limit: int = 20
    """Failed token attempts one client address may make within ``auth_failure_window_s``;
    then it gets 429 with Retry-After (its tokens are not even checked) until they age out."""
    auth_failure_window_s: float = 60.0
    """Window over which ``auth_failure_limit`` failures are counted."""
    create_rate_per_minute: float = 30.0
    """Sessions one client (address + API token) may create per minute on average (429 beyond)."""
    create_burst: int = 20
    """Sessions one client may create back to back before ``create_rate_per_minute`` applies."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins besides the gateway's own that may use the WebSocket and WHEP endpoints."""
    egress_deny: tuple[str, ...] = EGRESS_DENY_DEFAULT
    keepalive_timeout_s: float = 75.0
    """Seconds an idle HTTP keep-alive connection stays open (aiohttp's default is 3630:
    idle clients would hold a file descriptor each for an hour)."""
    """IPv4 networks egress sessions never reach (``--egress-deny``)."""
    max_connections: int = 0
    """Open connections to the gateway's port from all clients; more get 503 (0: derived
    from the file limit, ``gateway.security.conncap.default_caps``)."""
    max_connections_per_client: int = 0
    """Open connections from one client address; more get 503 (0: derived as above)."""
    event_log_max_mb: int = 64
    """Size a session's event log (``events.ndjson`` and ``events.1.ndjson``) stays under;
    past it the oldest events are dropped (an ``events_dropped`` event says so)."""
    session_log_max_mb: int = 64
    """Size past which a session's ``agent.log``/``app.log`` is cut: its newest half moves
    to ``*.1.log`` and a marker line starts the file again."""
    frame_ancestors: str = "'none'"
    """CSP ``frame-ancestors`` of the viewer pages ('none': they cannot be framed)."""
    max_body_kb: int = 64
    """Largest JSON or SDP request body in KiB (uploads have ``max_upload_mb``); more is 413."""
    max_fps: int = 60
    """Frame-rate cap of every session's video (``--max-fps``); the runtime agent's governor
    lowers it further when it cannot keep up."""
    bitrate_policy: str = "steering"
    """Whose bandwidth estimates (REMB) set every session's shared encoder bitrate
    (``--bitrate-policy``): ``steering`` (tokens that may take control; view-only viewers
    are paced on their own) or ``min`` (every viewer)."""
    viewer_limits: tuple[tuple[str, float], ...] = ()
    """Viewer caps passed to every runtime agent, overriding its defaults
    (names: ``wire.agent_api.VIEWER_LIMITS``)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names and addresses the gateway answers for besides localhost, 127.0.0.1, ::1
    and the address it serves on; others get 421. ``*`` answers for any."""
    ice_servers: tuple[str, ...] = ()
    """STUN/TURN servers offered to viewers (WHEP ``Link`` headers, the viewer page's
    RTCPeerConnection): ``URL`` or, for TURN, ``URL;username=U;credential=C``."""
    turn_urls: tuple[str, ...] = ()
    """TURN servers (coturn with ``use-auth-secret``) offered with credentials minted per
    viewer from ``turn_secret_file`` (``gateway.security.turn``), e.g. ``turn:HOST:3478``."""
    turn_secret_file: Path | None = None
    """File holding coturn's ``static-auth-secret``; needed with ``turn_urls``."""
    turn_ttl_s: float = 3600.0
    """How long a minted TURN credential stays valid."""

    pool_size: int = 0
    """Warm pods of the default pool key kept ready to claim (0: no warm pool)."""
    pool: tuple[tuple[str, int], ...] = ()
    """Warm pods per pool key (``WxH`` on ``local``; ``WxH`` or ``WxH/none|egress`` on
    ``docker``), besides ``pool_size``; see :func:`parse_pool_key`."""
    pool_max_age_s: float = 1800.0
    """A pooled pod older than this is replaced (it has not been claimed)."""
    pool_memory_growth_mb: int = 256
    """A pooled pod whose memory grew by more than this since it was ready is replaced."""
    pool_cpu_budget: float = 0.5
    """Share of one core the pool's refills may use on average (a refill that took *t*
    seconds is followed by a pause of t * (1/budget - 1))."""
    pool_max_load: float = 3.0
    """No refill while the 1-minute load average per core is above this."""
    max_starting: int = 0
    """Pods started at once; further creates wait their turn in ``starting`` (their
    start timeout counts from their turn). 0: twice the CPU count."""

    def __post_init__(self) -> None:
        if self.backend not in ("local", "docker", "swarm"):
            raise ValueError(f"backend must be local, docker or swarm, not {self.backend!r}")
        self.pool_sizes()  # an unknown key or a pool larger than max_sessions fails here
        if self.pool_max_age_s <= 0 or not 0 < self.pool_cpu_budget <= 1:
            raise ValueError("pool_max_age_s must be > 0 and pool_cpu_budget in (0, 1]")
        if self.max_starting < 0:
            raise ValueError(f"max_starting must be >= 0, not {self.max_starting}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, not {self.max_sessions}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        unknown = set(self.apps) - set(DEFAULT_APPS)
        if unknown:
            raise ValueError(f"unknown apps: {sorted(unknown)}")
        if self.recording_max_age_hours < 0 or self.recording_quota_mb < 0:
            raise ValueError("recording_max_age_hours and recording_quota_mb must be >= 0")
        if self.session_disk_mb != 0 and not 16 <= self.session_disk_mb <= 1024 * 1024:
            raise ValueError(f"session_disk_mb must be 0 (no limit) or 16-1048576, "
                             f"not {self.session_disk_mb}")
        if self.agent_restarts < 0:
            raise ValueError(f"agent_restarts must be >= 0, not {self.agent_restarts}")
        if self.backend == "swarm" and self.pool_sizes():
            raise ValueError("the swarm backend keeps no warm pool (a pooled pod would be "
                             "placed before its session's node and link are known): drop "
                             "--pool-size/--pool (docs/swarm.md)")
        if self.backend == "swarm" and self.agent_restarts:
            raise ValueError("the swarm backend does not restart a runtime agent inside its "
                             "pod (the pod ends with it and the session fails, naming the "
                             "node): drop --agent-restarts (docs/swarm.md)")
        if self.recording_min_free_mb < 0 or self.max_upload_mb < 1:
            raise ValueError("recording_min_free_mb must be >= 0 and max_upload_mb >= 1")
        if self.auth_failure_limit < 1 or self.auth_failure_window_s <= 0:
            raise ValueError("auth_failure_limit must be >= 1 and auth_failure_window_s > 0")
        if self.create_rate_per_minute <= 0 or self.create_burst < 1:
            raise ValueError("create_rate_per_minute must be > 0 and create_burst >= 1")
        if not 1 <= self.max_fps <= 120:
            raise ValueError(f"max_fps must be 1-120, not {self.max_fps}")
        if self.bitrate_policy not in BITRATE_POLICIES:
            raise ValueError(f"bitrate_policy must be one of {', '.join(BITRATE_POLICIES)}, "
                             f"not {self.bitrate_policy!r}")
        for name, value in self.viewer_limits:
            if name not in VIEWER_LIMITS or value < 0:
                raise ValueError(f"viewer limit {name}={value}: the names are "
                                 f"{', '.join(VIEWER_LIMITS)}, the values >= 0")
        if not 1 <= self.max_body_kb <= 1024:
            raise ValueError(f"max_body_kb must be 1-1024, not {self.max_body_kb}")
        if not self.frame_ancestors.strip() or any(c in self.frame_ancestors for c in ";,\r\n"):
            raise ValueError(f"frame_ancestors must be one CSP source list, not {self.frame_ancestors!r}")
        for server in self.ice_servers:
            parse_ice_server(server)
        for url in self.turn_urls:
            if not url.lower().startswith(("turn:", "turns:")):
                raise ValueError(f"turn url {url!r}: expected a turn: or turns: URL")
            parse_ice_server(f"{url};username=u;credential=c")
        if self.turn_urls and self.turn_secret_file is None:
            raise ValueError("turn_urls need turn_secret_file (coturn's static-auth-secret)")
        if self.turn_ttl_s < 60:
            raise ValueError(f"turn_ttl_s must be >= 60, not {self.turn_ttl_s}")

    def pool_sizes(self) -> dict[str, int]:
        """Warm pods by normalised pool key (``pool_size`` counts for the default key)."""
        sizes: dict[str, int] = {}
        if self.pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, not {self.pool_size}")
        if self.pool_size:
            sizes[default_pool_key(self.backend)] = self.pool_size
        for key, n in self.pool:
            if n < 0:
                raise ValueError(f"pool size of {key!r} must be >= 0, not {n}")
            norm = parse_pool_key(key, self.backend)
            sizes[norm] = sizes.get(norm, 0) + n
        total = sum(sizes.values())
        if total > self.max_sessions:
            raise ValueError(f"the warm pool ({total} pods) is larger than max_sessions "
                             f"({self.max_sessions}): pooled pods count against it")
        return {k: n for k, n in sizes.items() if n}

    @property
    def token_file(self) -> Path:
        return self.state_dir / "api-token"

    @property
    def db_file(self) -> Path:
        return self.state_dir / "sessions.sqlite3"

    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server as a viewer is told about it (RFC 7064/7065 URL)."""

    url: str
    """``stun:``, ``stuns:``, ``turn:`` or ``turns:`` URL, e.g. ``turn:turn.example:3478?transport=udp``."""
    username: str | None = None
    """TURN user name (long-term credential); None for STUN."""
    credential: str | None = None
    """TURN password for ``username``."""


_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
_ICE_BAD = frozenset(' \t\r\n"<>,;\\')


def parse_ice_server(text: str) -> IceServer:
    """``URL`` or ``URL;username=U;credential=C`` (TURN needs both, STUN takes neither);
    ValueError naming what is wrong. Values may not hold quotes, ``,``, ``;``, ``<``,
    ``>``, ``\\`` or white space, so they go into a ``Link`` header unescaped."""
    url, *params = text.strip().split(";")
    scheme = url[: url.find(":") + 1].lower()
    if scheme not in _ICE_SCHEMES or len(url) <= len(scheme) or _ICE_BAD & set(url):
        raise ValueError(f"ice server {text!r}: expected a stun:, stuns:, turn: or turns: URL")
    values: dict[str, str] = {}
    for param in params:
        key, sep, value = param.partition("=")
        if key not in ("username", "credential") or not sep or not value or key in values \
                or _ICE_BAD & set(value) or not value.isprintable():
            raise ValueError(f"ice server {text!r}: parameters are username=U and credential=C")
        values[key] = value
    if scheme.startswith("turn") and len(values) != 2:
        raise ValueError(f"ice server {text!r}: a TURN server needs username= and credential=")
    if scheme.startswith("stun") and values:
        raise ValueError(f"ice server {text!r}: a STUN server takes no credentials")
    return IceServer(url, values.get("username"), values.get("credential"))


POOL_RESOLUTION = "1920x1080"
"""Largest size of the default pool key's pods: they serve any session up to it."""


def default_pool_key(backend: str) -> str:
    return POOL_RESOLUTION if backend == "local" else f"{POOL_RESOLUTION}/egress"


def parse_pool_key(key: str, backend: str) -> str:
    """The normalised form of a pool key, or ValueError naming what is wrong.

    A key is what a pooled pod cannot change when claimed: its largest resolution
    (``WxH``: Xvfb's framebuffer; sessions up to that size are served by RandR) and,
    on ``docker`` (whose containers keep their network), the network mode
    (``WxH/none`` or ``WxH/egress``; plain ``WxH`` means egress). The ``local``
    backend sets the network at claim, so its keys are plain ``WxH``."""
    size, _, network = key.strip().partition("/")
    w, _, h = size.partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise ValueError(f"unknown pool key {key!r}: expected WxH"
                         + ("" if backend == "local" else " or WxH/none|egress"))
    width, height = int(w), int(h)
    if not (320 <= width <= 3840 and 240 <= height <= 2160) or width % 2 or height % 2:
        raise ValueError(f"unknown pool key {key!r}: the size must be even, "
                         "320-3840 x 240-2160")
    if backend == "local":
        if network:
            raise ValueError(f"unknown pool key {key!r}: the local backend sets the network "
                             f"at claim, use {width}x{height}")
        return f"{width}x{height}"
    if network not in ("", "none", "egress"):
        raise ValueError(f"unknown pool key {key!r}: the network must be none or egress")
    return f"{width}x{height}/{network or 'egress'}"


def env_default(name: str, fallback: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Value of ``VISUAL_RUNTIME_<NAME>`` or *fallback* (flags override this)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_PREFIX + name.upper(), fallback)
