"""npm packages the browser-client tests run (Puppeteer, WHEP players), installed once
per machine into ``build/npm-tests`` with npm itself (CI starts from nothing), and
:func:`browser_bundle`, which bundles an entry module with the pinned esbuild for a
page served by a test (no CDN)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "build" / "npm-tests"
PACKAGES = {
    "puppeteer-core": "24.43.1",
    "@eyevinn/webrtc-player": "0.13.0",
    "whip-whep": "1.2.0",
    "esbuild": "0.28.2",
}
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
            # all of them in one go: without a package.json npm prunes what it was not asked for
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save",
                            "--prefix", str(ROOT),
                            *(f"{n}@{v}" for n, v in PACKAGES.items())],
                           check=True, timeout=600, capture_output=True)
    return ROOT


def browser_bundle(entry: Path, out: Path) -> Path:
    """Bundle the ES module *entry* and the npm packages it imports into one browser
    script *out* (an IIFE) with the pinned esbuild; returns *out*."""
    prefix = npm_prefix()
    esbuild = prefix / "node_modules" / ".bin" / "esbuild"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(esbuild), str(entry), "--bundle", "--format=iife", "--platform=browser",
                    "--target=chrome120", "--log-level=warning", f"--outfile={out}"],
                   check=True, timeout=120, capture_output=True,
                   env={**os.environ, "NODE_PATH": str(prefix / "node_modules")})
    return out
