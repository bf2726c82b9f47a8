"""Typed keys of the aiohttp application state.

The key types are imported for type checking only, so that every sub-package can
use the keys without importing the ones above it at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.backends.base import SessionBackend
    from gateway.config import GatewayConfig
    from gateway.security.auth import Authenticator
    from gateway.sessions.manager import SessionManager

CONFIG: web.AppKey[GatewayConfig] = web.AppKey("config")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
MANAGER: web.AppKey[SessionManager] = web.AppKey("manager")
BACKEND: web.AppKey[SessionBackend] = web.AppKey("backend")
