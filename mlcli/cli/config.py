"""`mlcli config schema` and `mlcli config show`: the config's JSON Schema, and a config as
mlcli reads it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import ConfigArgument, Overrides, Verbose

SchemaOutput = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]


def config_schema(output: SchemaOutput = None, verbose: Verbose = False) -> None:
    """Print the config's JSON Schema, for YAML language servers and CI linting."""
    from mlcli.config.schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    from mlcli.files import write_text

    run_guarded(lambda: write_text(output, text), verbose=verbose)
    print(output)


def config_show(
    config: ConfigArgument, overrides: Overrides = None, verbose: Verbose = False
) -> None:
    """Print CONFIG as mlcli reads it: --set applied, every default written, ${VAR} kept as
    written (a value from the environment is never printed; data paths are shown resolved)."""
    from mlcli.config.loading import config_to_yaml, load_config

    loaded = run_guarded(lambda: load_config(config, overrides=overrides or []), verbose=verbose)
    sys.stdout.write(config_to_yaml(loaded))
