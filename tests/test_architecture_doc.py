"""docs/architecture.md names real things: every module, folder and symbol it cites exists.

A reference is a backticked path (`gateway/app.py`, `gateway/mcp/`), optionally
followed by ``:Name`` or ``:Name.attribute`` — a class, function or assignment
at module level, and a method or attribute of that class.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
REF = re.compile(r"`((?:gateway|agent_side|wire|visual_runtime_client|benchmarks|tests|web)"
                 r"/[\w/.-]*?)(?::([\w.]+))?`")


def references() -> list[tuple[str, str | None]]:
    return sorted(set(REF.findall(DOC.read_text())), key=str)


def _parse_cited() -> dict[str, ast.Module]:
    """Every cited module that names a symbol, parsed once at collection.

    Parsing here, before any test has started a thread, sidesteps CPython 3.11's
    ast bug gh-106905: an ``ast.parse`` racing another thread's AST conversion
    fails with "AST constructor recursion depth mismatch" (it failed a CI run)."""
    trees = {}
    for path, name in references():
        target = ROOT / path
        if name and path not in trees and target.is_file():
            trees[path] = ast.parse(target.read_text())
    return trees


TREES = _parse_cited()


def _defined(tree: ast.Module, dotted: str) -> bool:
    scope: list[ast.stmt] = tree.body
    for part in dotted.split("."):
        found: ast.stmt | None = None
        for node in scope:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name == part:
                    found = node
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == part for t in targets):
                    found = node
        if found is None:
            return False
        scope = found.body if isinstance(found, ast.ClassDef) else []
    return True


def test_the_doc_cites_modules() -> None:
    refs = references()
    assert len(refs) > 30
    assert any(name for _, name in refs)


@pytest.mark.parametrize(("path", "name"), references(), ids=lambda v: str(v))
def test_reference_exists(path: str, name: str | None) -> None:
    target = ROOT / path
    assert target.exists(), f"docs/architecture.md cites {path}, which does not exist"
    if name:
        assert _defined(TREES[path], name), f"docs/architecture.md cites {path}:{name}, not defined there"


def test_the_checker_sees_a_missing_symbol() -> None:
    tree = ast.parse("class A:\n    def f(self): ...\nB = 1\n")
    assert _defined(tree, "A.f") and _defined(tree, "B")
    assert not _defined(tree, "A.g") and not _defined(tree, "C")
