"""`mlcli train`: options in, `mlcli.training.train.train` called, the run directory printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import (
    LogFormatOption,
    Overrides,
    Quiet,
    RunsOutput,
    Verbose,
    reporter,
)

TrainConfigArgument = Annotated[
    Path | None,
    typer.Argument(
        help="The YAML config (default: config.yaml). With --resume it may be left out; "
        "given, it must equal the run's own config.",
        show_default=False,
    ),
]
ResumeOption = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue an interrupted (partial) run with its own config; a CONFIG or --set "
        "that would change it is refused.",
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="auto, cpu, gpu, gpu:0,1, or cpu:N (N logical CPUs, for tests); "
        "default: training.device.",
    ),
]


def train(
    config: TrainConfigArgument = None,
    overrides: Overrides = None,
    output: RunsOutput = None,
    resume: ResumeOption = None,
    device: DeviceOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Train a model from CONFIG; prints the run directory as the last line."""

    def action() -> Path:
        # the config, the data's headers and the device are checked before TensorFlow
        # loads (on a thread, while the data is read: `mlcli.training.train`)
        from mlcli.training.devices import parse_device

        progress = reporter(quiet, log_format)
        if device is not None:
            parse_device(device)  # a bad value is exit 2 before TensorFlow is needed
        from mlcli.training.train import train as train_model

        return train_model(
            config,
            overrides=overrides or [],
            output_dir=output,
            resume=resume,
            device=device,
            reporter=progress,
            verbose=verbose,
        )

    print(run_guarded(action, verbose=verbose))
