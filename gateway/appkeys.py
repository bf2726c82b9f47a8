"""Typed keys of the aiohttp application state."""

from __future__ import annotations

from aiohttp import web

from .auth import Authenticator
from .backends.base import SessionBackend
from .config import GatewayConfig
from .manager import SessionManager

CONFIG = web.AppKey("config", GatewayConfig)
AUTH = web.AppKey("auth", Authenticator)
MANAGER = web.AppKey("manager", SessionManager)
BACKEND = web.AppKey("backend", SessionBackend)
