"""What every doctor check returns, the options they read, and the subprocess helper.

Shared by :mod:`gateway.cli.doctor` (programs, state, port, docker) and
:mod:`gateway.cli.doctor_sandbox` (sandboxes, cgroups, XShm), so that neither
imports the other's checks.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.config import DEFAULT_APPS, GatewayConfig

__all__ = ["Check", "DoctorOptions", "run_tool"]


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    """Short name (``ffmpeg``, ``cgroups``, ``port``...)."""
    required: bool
    """A failed required check makes ``doctor`` exit non-zero."""
    ok: bool
    detail: str
    """What was found (version, path, numbers) or what is wrong."""
    fix: str = ""
    """The command or change that fixes a failure (empty when ok)."""
    skipped: bool = False
    """Not run because something it needs failed earlier (see that check)."""

    @property
    def failed(self) -> bool:
        return self.required and not self.ok and not self.skipped


@dataclass(frozen=True)
class DoctorOptions:
    """What to check: the settings ``serve`` would run with."""

    backend: str = "local"
    state_dir: Path = Path("state")
    runtime_dir: Path = Path("/run/visual-runtime")
    host: str = "127.0.0.1"
    port: int = 3000
    apps: tuple[str, ...] = DEFAULT_APPS
    docker_image: str = "visual-runtime-session:latest"
    recording_min_free_mb: int = 256
    recording_quota_mb: int = 10240
    uid_base: int = 200_000
    xshm_timeout_s: float = 8.0
    """Budget of the sandboxed XShm probe."""
    config: GatewayConfig | None = None
    """The whole configuration (the swarm checks read its placement settings)."""




def run_tool(argv: list[str], timeout: float = 10.0, **kwargs: object) -> tuple[int, str]:
    """(exit status, stdout+stderr); 127 when it cannot run, 124 on timeout."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as e:
        return 127, str(e)
    except PermissionError as e:
        return 126, str(e)
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} did not finish within {timeout:.0f} s"
    out = (proc.stdout or b"") + (proc.stderr or b"")
    return proc.returncode, out.decode(errors="replace")
