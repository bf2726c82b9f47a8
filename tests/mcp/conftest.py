"""The official MCP TypeScript SDK for tests/mcp, installed from npm on first use.

``tests/mcp/node`` pins ``@modelcontextprotocol/sdk`` in package.json and
package-lock.json; ``npm ci`` installs exactly that into its node_modules (CI is
a fresh machine). node and npm come from scripts/setup.sh; missing, the tests fail.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_binary

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def mcp_node_client() -> Path:
    """Path of client.mjs, with the SDK installed beside it."""
    require_binary("node")
    npm = require_binary("npm")
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/@modelcontextprotocol/sdk"]["version"]
    installed = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{proc.stdout}\n{proc.stderr}")
    return NODE_DIR / "client.mjs"
