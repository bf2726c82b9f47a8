"""Session backends: a tiny ABC (``base.py``) and a factory."""

from __future__ import annotations

from ..config import GatewayConfig
from ..errors import BackendError
from .base import PodHandle, PodRequest, SessionBackend

__all__ = ["BackendError", "PodHandle", "PodRequest", "SessionBackend", "create_backend"]


def create_backend(config: GatewayConfig) -> SessionBackend:
    if config.backend == "local":
        from .local import LocalBackend

        return LocalBackend(config)
    if config.backend == "docker":
        try:
            from .docker import DockerBackend  # type: ignore[import-not-found,unused-ignore]
        except ImportError as e:
            raise BackendError("the docker backend is not available in this build") from e
        return DockerBackend(config)  # type: ignore[no-any-return,unused-ignore]
    if config.backend == "swarm":
        from .swarm import SwarmBackend

        return SwarmBackend(config)
    raise BackendError(f"unknown backend {config.backend!r}")
