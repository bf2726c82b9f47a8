"""Routes of the recordings feature (filled in by its owner)."""

from __future__ import annotations

from aiohttp import web


def setup_routes(app: web.Application) -> None:
    """Add this feature's routes to the gateway app."""
