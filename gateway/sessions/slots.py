"""Machine-wide slot numbers for live sessions (uids, veth names, subnets).

A slot is a file ``<dir>/<n>`` created with O_EXCL and holding the session id,
so two gateways on one machine never hand out the same uid or subnet.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.errors import CapacityProblem

MAX_SLOTS = 4096


class SlotTable:
    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def acquire(self, session_id: str) -> int:
        self._dir.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_SLOTS):
            try:
                fd = os.open(self._dir / str(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(session_id)
            return n
        raise CapacityProblem("no free session slot on this machine")

    def release(self, slot: int, session_id: str) -> None:
        """Free *slot* if *session_id* holds it (idempotent)."""
        path = self._dir / str(slot)
        try:
            if path.read_text().strip() == session_id:
                path.unlink()
        except FileNotFoundError:
            pass
