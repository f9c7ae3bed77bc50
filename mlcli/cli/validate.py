"""`mlcli validate`: checks a config and the first rows of its data with
`mlcli.training.validate.validate`; prints a table, or one JSON object."""

from __future__ import annotations

import json

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import ConfigArgument, LogFormatOption, Overrides, Quiet, Verbose


def validate(
    config: ConfigArgument,
    overrides: Overrides = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Check CONFIG and the header and first rows of its data; trains nothing."""
    from mlcli.training.validate import validate as validate_config

    report = run_guarded(
        lambda: validate_config(config, overrides=overrides or []), verbose=verbose
    )
    if log_format == "json":
        summary = {
            "config": str(config),
            "valid": True,
            "sample_rows": report.sample_rows,
            "features": report.feature_types,
            "excluded": report.excluded,
        }
        print(json.dumps(summary))
    elif not quiet:
        from mlcli.cli import views

        views.stdout().print(views.validation_table(config, report))
