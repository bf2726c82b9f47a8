"""The docs cannot drift from the code: every serve flag is in docs/operations.md."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import settings_doc

ROOT = Path(__file__).resolve().parents[2]


def test_operations_page_lists_every_serve_flag() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    block = doc[doc.index(settings_doc.BEGIN):doc.index(settings_doc.END)]
    rows = {line.split("|")[1].strip(): line for line in block.splitlines()
            if line.startswith("| `--")}
    flags = settings_doc.serve_flag_rows()
    assert len(flags) >= 10
    missing = [flag for flag, _, _, _ in flags if f"`{flag}`" not in rows]
    assert not missing, (f"docs/operations.md lacks {missing}; "
                         "run `python -m gateway.cli.settings_doc --write`")
    for flag, env, default, _ in flags:
        row = rows[f"`{flag}`"]
        assert f"`{env}`" in row and f"`{default}`" in row, (
            f"{flag}: stale row {row!r}; run `python -m gateway.cli.settings_doc --write`")
    for name, _, _ in settings_doc.config_only_rows():
        assert f"| `{name}` |" in block, f"GatewayConfig.{name} is not documented"


def test_troubleshooting_covers_what_users_hit() -> None:
    doc = (ROOT / "docs" / "troubleshooting.md").read_text()
    for heading in ("## The API does not answer", "## Cannot connect to the live view",
                    "## Recording missing or not playing", "## Chromium crashes in a session",
                    "## A session will not start"):
        assert heading in doc
    for command in ("visual-runtime doctor", "visual-runtime logs ID", "/healthz",
                    "visual-runtime sessions get ID", "ffprobe"):
        assert command in doc
    readme = (ROOT / "README.md").read_text()
    assert "## Troubleshooting" in readme and "visual-runtime doctor" in readme
    assert "docs/troubleshooting.md" in readme and "docs/operations.md" in readme
