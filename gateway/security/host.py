"""The ``Host`` check: the gateway answers only under its own names (DNS rebinding).

A page on ``evil.example`` whose DNS name is re-pointed at 127.0.0.1 makes the
browser send requests to the gateway with ``Host: evil.example:3000`` and, as
far as the browser's same-origin rules go, from the gateway's own origin — so
the ``Origin`` check (:mod:`gateway.security.origin`), which compares against
``Host``, cannot see it. Refusing every ``Host`` that is not one of the
gateway's names closes that: ``localhost``, ``127.0.0.1`` and ``::1`` always,
the address it serves on (``--host``, unless a wildcard), and
``--allowed-hosts``. ``*`` in the allow list turns the check off (behind a
proxy that checks it instead). Refusals are ``421 Misdirected Request``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LOCAL_NAMES", "allowed_host_names", "host_allowed", "host_name"]

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def host_name(header: str) -> str | None:
    """The name of a ``Host`` header without its port, lower-case; None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
    else:
        name, sep, port = value.partition(":")
        rest = sep + port
    if rest and (not rest.startswith(":") or not rest[1:].isdigit()):
        return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/\\@ \t"):
        return None
    return name


def allowed_host_names(bind_host: str, allowed: Iterable[str]) -> frozenset[str] | None:
    """The names to answer for; None when any is allowed (``*``)."""
    names = set(LOCAL_NAMES)
    for entry in (bind_host, *allowed):
        entry = entry.strip()
        if entry == "*":
            return None
        if entry.lower() in WILDCARDS:
            continue
        # A bare IPv6 address has several colons and no brackets.
        name = host_name(f"[{entry}]" if entry.count(":") > 1 and "[" not in entry else entry)
        if name:
            names.add(name)
    return frozenset(names)


def host_allowed(header: str | None, names: frozenset[str] | None) -> bool:
    """Whether a request with this ``Host`` header may be served."""
    if names is None or header is None:
        return True  # HTTP/1.0 without Host: no browser sends that, so no rebinding
    name = host_name(header)
    return name is not None and name in names
