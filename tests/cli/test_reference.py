"""docs/cli.md is what Typer's generator makes of the app today (docs/gen_cli.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO, regenerated

REFERENCE = REPO / "docs" / "cli.md"


def _generate(output: Path) -> str:
    return regenerated("gen_cli.py", output)


def test_the_cli_reference_is_up_to_date(tmp_path):
    fresh = _generate(tmp_path / "cli.md")
    assert REFERENCE.read_text(encoding="utf-8") == fresh, (
        "docs/cli.md is stale: regenerate it with `python docs/gen_cli.py` and commit it"
    )


def test_the_reference_names_every_command_and_shared_option(tmp_path):
    text = _generate(tmp_path / "cli.md")
    for command in ("train", "validate", "evaluate", "explain", "predict", "init", "serve", "tune"):
        assert f"## `mlcli {command}`" in text
    for command in ("export", "runs list", "runs show", "config schema", "config show"):
        assert f"`mlcli {command}`" in text
    assert text.count("* `--log-format <str>`") == 11  # every command but config schema and show
