"""The recorded upstream request bodies in ``fixtures/*.json`` (each file cites its source)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"

ANTHROPIC_TOOLS = ("computer_20241022", "computer_20250124", "computer_20251124",
                   "computer_toolset_20260801")
OPENAI_TOOLS = ("computer_use_preview", "computer")


def load(tool: str) -> dict[str, Any]:
    """``{"tool", "source", "calls": {name: body}}`` of one upstream tool."""
    for path in sorted(FIXTURES.glob("*.json")):
        data = json.loads(path.read_text())
        if data["tool"] == tool:
            assert data["source"], f"{path.name} cites no source"
            return data
    raise KeyError(tool)


def calls(tool: str) -> dict[str, Any]:
    return dict(load(tool)["calls"])
