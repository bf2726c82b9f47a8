"""A size guard on inbound data-channel messages, at aiortc's SCTP reassembly.

aiortc 1.16 (``aiortc/rtcsctptransport.py``) reassembles a fragmented SCTP
message in ``InboundStream.reassembly``, a list of every DATA chunk received
and not yet delivered, with no limit: its receive window (1 MiB advertised)
is only advice to the sender, and ``_receive_data_chunk`` stores whatever
arrives. ``pop_messages`` rescans the whole list for every chunk, so one
unterminated message of N fragments costs O(N) memory and O(N^2) CPU (issue
21: 4,000 fragments, 4.7 MB, cost 1 s of CPU). A viewer with a watch link can
open a data channel and send that.

This module wraps ``RTCSctpTransport._receive_data_chunk`` (the one place a
DATA chunk enters reassembly) for the runtime agent's process. After each
chunk it adds up the undelivered chunks of the association; past the limit
it empties the reassembly lists, drops every later chunk of that association
and calls the association's ``on_violation`` (the peer manager closes the
peer). So an association never holds more than the limit plus one chunk, and
a rescan never walks more than the limit's worth of chunks. The local
``a=max-message-size`` (``LOCAL_MAX_MESSAGE_SIZE``) is set to the same limit,
so honest browsers refuse to send a bigger message in the first place.

This reaches into aiortc's private attributes (``_inbound_streams``,
``InboundStream.reassembly``); aiortc is pinned to 1.16.x in pyproject.toml
and :func:`install` checks that the attributes exist.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiortc.rtcsctptransport as sctp_module
from aiortc.rtcsctptransport import RTCSctpTransport

__all__ = ["DEFAULT_MAX_BYTES", "MAX_PENDING_CHUNKS", "install", "pending", "watch"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES: Final = 256 * 1024
"""Limit of associations nobody :func:`watch`-ed (and aiortc's own advertised size)."""
MAX_PENDING_CHUNKS: Final = 4096
"""Undelivered chunks per association at most, whatever their size (an empty
chunk adds no bytes but one more entry every rescan walks)."""


@dataclass
class _Guard:
    max_bytes: int
    on_violation: Callable[[int, int], Awaitable[None] | None] | None
    tripped: bool = False


_guards: weakref.WeakKeyDictionary[RTCSctpTransport, _Guard] = weakref.WeakKeyDictionary()
_default = _Guard(DEFAULT_MAX_BYTES, None)
_original: Callable[[RTCSctpTransport, Any], Awaitable[None]] | None = None


def pending(transport: RTCSctpTransport) -> tuple[int, int]:
    """(bytes, chunks) received and not yet delivered on *transport*."""
    size = count = 0
    for stream in transport._inbound_streams.values():
        count += len(stream.reassembly)
        size += sum(len(chunk.user_data) for chunk in stream.reassembly)
    return size, count


async def _guarded_receive_data_chunk(self: RTCSctpTransport, chunk: Any) -> None:
    guard = _guards.get(self, _default)
    if guard.tripped:
        return  # the association is being closed: store nothing more
    assert _original is not None
    await _original(self, chunk)
    size, count = pending(self)
    if size <= guard.max_bytes and count <= MAX_PENDING_CHUNKS:
        return
    if guard is _default:
        guard = _Guard(_default.max_bytes, None)
        _guards[self] = guard
    guard.tripped = True
    for stream in self._inbound_streams.values():
        stream.reassembly.clear()
    logger.warning("data-channel message over %d bytes (%d bytes in %d fragments pending): "
                   "closing the association", guard.max_bytes, size, count)
    if guard.on_violation is not None:
        result = guard.on_violation(size, count)
        if result is not None:
            await result
    else:
        await self.stop()


def install(max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Wrap aiortc's DATA chunk intake (idempotent) and advertise *max_bytes*."""
    global _original
    probe = sctp_module.InboundStream()
    if not hasattr(probe, "reassembly") or not hasattr(RTCSctpTransport, "_receive_data_chunk"):
        raise RuntimeError("aiortc's SCTP reassembly is not what agent_side.sctpguard expects "
                           "(aiortc 1.16.x is pinned)")
    if _original is None:
        _original = RTCSctpTransport._receive_data_chunk
        RTCSctpTransport._receive_data_chunk = _guarded_receive_data_chunk  # type: ignore[method-assign]
    _default.max_bytes = max_bytes
    sctp_module.LOCAL_MAX_MESSAGE_SIZE = max_bytes


def watch(transport: RTCSctpTransport, max_bytes: int,
          on_violation: Callable[[int, int], Awaitable[None] | None]) -> None:
    """Guard *transport* with *max_bytes*; *on_violation(bytes, chunks)* when exceeded."""
    _guards[transport] = _Guard(max_bytes, on_violation)
