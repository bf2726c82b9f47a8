"""Running ``visual-runtime`` as a subprocess, the way a person does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any ``VISUAL_RUNTIME_*`` setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISUAL_RUNTIME_")}
    env.pop("BROWSER", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or clean_env(),
                          stdin=subprocess.DEVNULL)


def path_without(tmp: Path, *hidden: str) -> str:
    """A PATH of symlinks to every program on the real PATH except *hidden*."""
    farm = tmp / "bin"
    farm.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = os.path.join(d, name)
            link = farm / name
            if name in hidden or link.exists() or link.is_symlink():
                continue
            if os.path.isfile(target) and os.access(target, os.X_OK):
                link.symlink_to(target)
    return str(farm)
