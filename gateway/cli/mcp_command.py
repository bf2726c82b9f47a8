"""``visual-runtime mcp``: the MCP tools over stdio, for desktop MCP clients (docs/mcp.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gateway.cli.commands import UsageError, resolve_token, resolve_url
from gateway.config import env_default
from gateway.mcp import serve_stdio

__all__ = ["add_mcp_command"]


def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        url, token = resolve_url(args), resolve_token(args)
    except UsageError as e:
        print(f"visual-runtime mcp: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve_stdio(url, token))
    return 0


def add_mcp_command(sub: Any) -> None:
    p = sub.add_parser("mcp", help="serve the MCP tools on stdin/stdout against a gateway")
    p.add_argument("--url", default=env_default("url", None),
                   help="gateway base URL (env VISUAL_RUNTIME_URL; default: <state dir>/"
                        "gateway-url, else http://127.0.0.1:3000)")
    p.add_argument("--token", default=env_default("token", None),
                   help="API token (env VISUAL_RUNTIME_TOKEN; default: <state dir>/api-token)")
    p.add_argument("--state-dir", default=env_default("state_dir", "state") or "state",
                   help="the gateway's state dir, for its URL and token")
    p.add_argument("--log-level", default="WARNING",
                   help="logging level on stderr (stdout carries MCP; default WARNING)")
    p.set_defaults(func=cmd_mcp)
