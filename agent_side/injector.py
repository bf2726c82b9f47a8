"""Input injection into an X display: the public names and the factory.

* :class:`~agent_side.injection.InputInjector` — the interface every caller uses;
* :class:`~agent_side.injection.NullInjector` — tracks state, injects nothing;
* :class:`~agent_side.xtest.XTestInjector` — a real X server through XTEST, with
  :mod:`agent_side.xkeymap` (keysyms on the keyboard map) and
  :mod:`agent_side.clipboard` (the selection owner);
* :func:`create_injector` — builds one by kind.
"""

from __future__ import annotations

from .injection import BUTTON_NUMBERS, InjectorKind, InputInjector, MouseButton, NullInjector
from .xtest import XTestInjector

__all__ = [
    "BUTTON_NUMBERS",
    "InjectorKind",
    "InputInjector",
    "MouseButton",
    "NullInjector",
    "XTestInjector",
    "create_injector",
]


def create_injector(
    kind: InjectorKind, *, display: str | None = None, width: int, height: int
) -> InputInjector:
    """Build an injector: ``"xtest"`` (needs ``display``) or ``"null"``."""
    if kind == "xtest":
        if not display:
            raise ValueError("the xtest injector needs a display, e.g. ':1'")
        return XTestInjector(display, width, height)
    if kind == "null":
        return NullInjector(width, height)
    raise ValueError(f"unknown injector kind {kind!r}")
