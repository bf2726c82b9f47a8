"""npm packages the browser-client tests run (Puppeteer, WHEP players), installed once
per machine into ``build/npm-tests`` with npm itself (CI starts from nothing)."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "build" / "npm-tests"
PACKAGES = {"puppeteer-core": "24.43.1"}
"""Pinned versions (what the tests were written against)."""


def npm_prefix() -> Path:
    """A folder whose ``node_modules`` holds :data:`PACKAGES` (installs what is missing)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are needed for these tests (apt-get install nodejs npm)")
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = []
        for name, version in PACKAGES.items():
            manifest = ROOT / "node_modules" / name / "package.json"
            if not manifest.is_file() or json.loads(manifest.read_text())["version"] != version:
                missing.append(f"{name}@{version}")
        if missing:
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save",
                            "--prefix", str(ROOT), *missing], check=True, timeout=600,
                           capture_output=True)
    return ROOT
