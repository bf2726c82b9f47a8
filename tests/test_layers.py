"""The dependency rule of the code base, read from the imports themselves.

* ``wire`` (the shared wire format) imports neither the gateway nor the runtime agent;
* ``agent_side`` and ``gateway`` may import ``wire``, never each other;
* ``visual_runtime_client`` imports none of the three (agent hosts install it alone);
* inside ``gateway`` the sub-packages form layers, and a module imports only from its
  own layer or the ones below it (docs/architecture.md draws them);
* there is no import cycle between modules.

Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "agent_side", "wire", "visual_runtime_client")

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "wire": ("gateway", "agent_side", "visual_runtime_client"),
    "agent_side": ("gateway", "visual_runtime_client"),
    "gateway": ("agent_side",),
    "visual_runtime_client": ("gateway", "agent_side", "wire"),
}

# Bottom to top; a gateway module may import gateway modules of its own layer or below.
GATEWAY_LAYERS: tuple[tuple[str, ...], ...] = (
    ("gateway.config", "gateway.errors", "gateway.appkeys", "gateway.spec"),
    ("gateway.backends",),
    ("gateway.sessions",),
    ("gateway.security",),
    ("gateway.media",),
    ("gateway.http",),
    ("gateway.mcp",),
    ("gateway.app",),
    ("gateway.cli", "gateway.__main__"),
)


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports at run time (absolute names, relative resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import mod`` imports the module pkg.mod when there is one
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


ALL = dict(modules())
GRAPH = {name: {i for i in imports_of(name, path) if i in ALL} for name, path in ALL.items()}
RAW = {name: imports_of(name, path) for name, path in ALL.items()}


def _layer(module: str) -> int | None:
    for index, prefixes in enumerate(GATEWAY_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def test_every_module_is_seen() -> None:
    assert {"gateway.app", "gateway.sessions.manager", "agent_side.media", "wire.actions",
            "visual_runtime_client.client"} <= set(ALL)


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_keep_to_their_side(package: str) -> None:
    bad = sorted(f"{name} imports {target}" for name, targets in RAW.items()
                 if name.split(".")[0] == package for target in targets
                 if target.split(".")[0] in FORBIDDEN[package])
    assert bad == []


def test_gateway_layers_point_down() -> None:
    bad = []
    for name, targets in GRAPH.items():
        if not name.startswith("gateway.") or name == "gateway":
            continue
        own = _layer(name)
        assert own is not None, f"{name} belongs to no layer; add it to GATEWAY_LAYERS"
        for target in targets:
            if target == "gateway" or not target.startswith("gateway"):
                continue
            theirs = _layer(target)
            if theirs is not None and theirs > own:
                bad.append(f"{name} (layer {own}) imports {target} (layer {theirs})")
    assert bad == []


def test_no_import_cycles() -> None:
    # Packages' __init__ modules re-export their children; an edge child -> parent
    # package is the normal "import a sibling through the package" and is skipped.
    graph = {name: {t for t in targets if not name.startswith(t + ".")}
             for name, targets in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert cycles == []


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself: a planted upward import and a planted cycle are found."""
    a = tmp_path / "a.py"
    a.write_text("from gateway.http import api\nimport agent_side.media\n"
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway.cli\n")
    found = imports_of("gateway.sessions.fake", a)
    assert "gateway.http.api" in found and "agent_side.media" in found
    assert "gateway.cli" not in found
    assert _layer("gateway.sessions.fake") == 2 and _layer("gateway.http.api") == 5
