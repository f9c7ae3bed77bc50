"""Writes docs/cli.md, the command-line reference, from the Typer app with Typer's own generator.

Run it after changing a command, an option or a help text:

    python docs/gen_cli.py

It calls what `typer mlcli.cli.app utils docs --name mlcli` calls (`typer.cli`'s
`get_docs_for_click`), with the environment that output depends on fixed, so that the file
is the same on every machine. tests/cli/test_reference.py fails while docs/cli.md is stale.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REFERENCE = DOCS / "cli.md"
COMMAND = "python docs/gen_cli.py"

_HEADER = f"<!-- Generated from mlcli.cli.app by `{COMMAND}`: edit the commands, not this file. -->"
# Typer offers --install-completion a shell argument instead when shell detection is off;
# the rest pins what rich and click read, should a later version format help text with them.
_UNSET = ("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "FORCE_COLOR", "TTY_COMPATIBLE")
_FIXED = {"COLUMNS": "100", "LINES": "40", "NO_COLOR": "1", "TERM": "dumb"}


def _pin_environment() -> None:
    for name in _UNSET:
        os.environ.pop(name, None)
    os.environ.update(_FIXED)


def reference() -> str:
    """The Markdown reference of every `mlcli` command, as Typer's docs generator writes it."""
    _pin_environment()
    sys.path.insert(0, str(DOCS.parent))  # this checkout's mlcli, installed or not
    import click
    import typer.main
    from typer.cli import get_docs_for_click

    from mlcli.cli.app import app

    command = typer.main.get_command(app)
    context = click.Context(command, info_name="mlcli", color=False)
    body = get_docs_for_click(obj=command, ctx=context, name="mlcli")
    return f"{_HEADER}\n\n{body.strip()}\n"


def main(argv: list[str] | None = None) -> None:
    """Writes the reference to docs/cli.md, or to `--output`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REFERENCE, help="default: docs/cli.md")
    output = parser.parse_args(argv).output
    output.write_text(reference(), encoding="utf-8")
    print(output)


if __name__ == "__main__":
    main()
