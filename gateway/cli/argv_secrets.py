"""``--token VALUE`` never stays in the process's command line.

Any local user can read every process's command line (``ps``, ``/proc/<pid>/cmdline``);
only the same uid and root can read its environment. So when a command was given
the API token as ``--token``, the process re-executes itself once, at once, with
the token moved to ``VISUAL_RUNTIME_TOKEN`` (which every command reads when
``--token`` is absent) and the flag removed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from gateway.config import ENV_PREFIX

__all__ = ["TOKEN_ENV", "reexec_without_token", "without_token"]

TOKEN_ENV = ENV_PREFIX + "TOKEN"


def without_token(argv: Sequence[str]) -> tuple[list[str], str] | None:
    """*argv* without its ``--token VALUE`` / ``--token=VALUE``, and the value; None
    when there is none (arguments after ``--`` are left alone)."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if arg == "--token" and i + 1 < len(args):
            return args[:i] + args[i + 2:], args[i + 1]
        if arg.startswith("--token="):
            return args[:i] + args[i + 1:], arg[len("--token="):]
    return None


def reexec_without_token(orig_argv: Sequence[str] | None = None,
                         environ: Mapping[str, str] | None = None) -> None:
    """Re-execute this interpreter without ``--token`` in its arguments (no return),
    or return when there is none."""
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    found = without_token(argv[1:])
    if found is None:
        return
    rest, token = found
    env = dict(os.environ if environ is None else environ)
    env[TOKEN_ENV] = token
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [argv[0], *rest], env)
