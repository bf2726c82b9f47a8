"""Progress output: a redrawn bar on terminals (or forced), plain lines otherwise."""

from __future__ import annotations

import io

from gateway.cli.progress import Progress, human_bytes


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024 ** 3) == "5.0 GiB"


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("recording x", total=2048, stream=out)
    for done in (512, 1024, 2048):
        p.update(done)
    p.finish("recording x: 2.0 KiB")
    assert out.getvalue() == "recording x (2.0 KiB)...\nrecording x: 2.0 KiB\n"


def test_state_lines_when_waiting() -> None:
    out = io.StringIO()
    p = Progress("session s", stream=out)
    p.set_state("starting")
    p.set_state("starting")
    p.set_state("running")
    p.finish("session s: running after 1 s", plain=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == "session s..."
    assert lines[1].startswith("session s: starting (") and lines[2].startswith(
        "session s: running (")
    assert len(lines) == 3


def test_bar_on_a_terminal_is_redrawn_and_cleared() -> None:
    out = _Tty()
    p = Progress("recording x", total=1000, stream=out)
    p.update(1000)
    p.finish("done")
    text = out.getvalue()
    assert text.startswith("\rrecording x [" + "#" * 24 + "] 100.0% 1000 B/1000 B")
    assert text.endswith("\rdone\n")


def test_forced_bar_and_disabled() -> None:
    forced = io.StringIO()
    Progress("x", total=10, stream=forced, force_bar=True).update(5)
    assert "50.0%" in forced.getvalue()
    silent = _Tty()
    p = Progress("x", total=10, stream=silent, enabled=False)
    p.update(10)
    p.finish("done")
    assert silent.getvalue() == ""


def test_the_last_update_draws_a_complete_bar() -> None:
    """Updates within the redraw interval are skipped, but never the one that completes
    it: a fast download's bar ends at 100 % (it once stopped at 69 %)."""
    out = io.StringIO()
    p = Progress("x", total=100, stream=out, force_bar=True)
    p.update(69)
    p.update(80)  # within 0.1 s of the last draw: skipped
    assert "80.0%" not in out.getvalue()
    p.update(100)
    assert "100.0%" in out.getvalue()
