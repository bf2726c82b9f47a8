"""The runtime agent's sandbox binds Python, the venv and the code, symlinks included.

Found on the cgroup v2 guest (scripts/cgroup-v2-vm.sh), whose checkout has a
``.venv`` symlink to a venv elsewhere: bubblewrap refused to bind the venv onto
the symlink inside the already bound checkout, and every session failed. Each
case runs the binds :func:`agent_python_dirs` returns through a real bubblewrap,
as the local backend does, and reads a file of the venv through the path the
agent is started with.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.backends import sandbox
from gateway.backends.sandbox import agent_python_dirs
from tests.conftest import require_binary


def _read_in_sandbox(dirs: set[Path], path: Path) -> subprocess.CompletedProcess[str]:
    argv = [require_binary("bwrap"), "--unshare-pid", *sandbox.BASE_FS]
    argv += sandbox.parent_dirs(*(str(d / "x") for d in sorted(dirs)))
    for d in sorted(dirs):
        argv += ["--ro-bind", str(d), str(d)]
    argv += ["--", "cat", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _venv(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "marker").write_text("the venv\n")
    return root


def test_a_venv_symlinked_into_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = _venv(tmp_path / "opt" / "venv")
    project = tmp_path / "src"
    project.mkdir()
    (project / ".venv").symlink_to(venv)
    monkeypatch.setattr(sandbox, "PROJECT_ROOT", project)
    monkeypatch.setattr(sys, "prefix", str(project / ".venv"))
    dirs = agent_python_dirs()
    assert {project, venv} <= dirs
    assert project / ".venv" not in dirs  # the symlink shows inside the bound checkout
    done = _read_in_sandbox(dirs, project / ".venv" / "bin" / "marker")
    assert (done.returncode, done.stdout) == (0, "the venv\n"), done.stderr


def test_a_checkout_reached_through_a_symlink(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "data" / "src"
    _venv(project / ".venv")
    link = tmp_path / "src-link"
    link.symlink_to(project)
    monkeypatch.setattr(sandbox, "PROJECT_ROOT", link)
    monkeypatch.setattr(sys, "prefix", str(link / ".venv"))
    dirs = agent_python_dirs()
    assert {project, link, project / ".venv"} <= dirs
    done = _read_in_sandbox(dirs, link / ".venv" / "bin" / "marker")
    assert (done.returncode, done.stdout) == (0, "the venv\n"), done.stderr


def test_this_checkout() -> None:
    dirs = agent_python_dirs()
    assert sandbox.PROJECT_ROOT.resolve() in dirs
    assert Path(sys.prefix).resolve() in dirs
    done = _read_in_sandbox(dirs, Path(sys.prefix) / "pyvenv.cfg")
    assert done.returncode == 0 and "version" in done.stdout, done.stderr
