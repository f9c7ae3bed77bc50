"""`mlcli train`: options in, `mlcli.training.train.train` called (with `--ray`,
`mlcli.training.ray_train.train_on_ray`), the run directory printed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import (
    LogFormatOption,
    Overrides,
    Quiet,
    RayOption,
    RunsOutput,
    Verbose,
    reporter,
)

if TYPE_CHECKING:
    from mlcli.training.ray_cluster import WorkerRequest

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
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="With --ray: training workers, each running mlcli's multi-worker training "
        "(worker 0 writes the run) [default: 1].",
        show_default=False,
    ),
]
CpusPerWorkerOption = Annotated[
    float, typer.Option("--cpus-per-worker", help="With --ray: CPUs Ray reserves per worker.")
]
GpusPerWorkerOption = Annotated[
    float, typer.Option("--gpus-per-worker", help="With --ray: GPUs Ray reserves per worker.")
]
PlacementOption = Annotated[
    str,
    typer.Option(
        "--placement",
        help="With --ray: pack (as few nodes as possible) or spread (one worker per node "
        "where possible).",
    ),
]


def _ray_request(
    ray: str | None, workers: int | None, cpus: float, gpus: float, placement: str
) -> WorkerRequest | None:
    """The Ray workers asked for, checked (exit 2) before anything heavy loads."""
    from mlcli._ray import parse_address, require_ray
    from mlcli.errors import ConfigError
    from mlcli.training.ray_cluster import WorkerRequest

    if ray is None:
        given = [
            name
            for name, value, default in (
                ("--workers", workers, None),
                ("--cpus-per-worker", cpus, 1.0),
                ("--gpus-per-worker", gpus, 0.0),
                ("--placement", placement, "pack"),
            )
            if value != default
        ]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --ray (training on Ray workers)")
        return None
    request = WorkerRequest(workers if workers is not None else 1, cpus, gpus, placement)
    request.check()
    parse_address(ray)
    require_ray("mlcli train")
    return request


def train(
    config: TrainConfigArgument = None,
    overrides: Overrides = None,
    output: RunsOutput = None,
    resume: ResumeOption = None,
    device: DeviceOption = None,
    ray: RayOption = None,
    workers: WorkersOption = None,
    cpus_per_worker: CpusPerWorkerOption = 1.0,
    gpus_per_worker: GpusPerWorkerOption = 0.0,
    placement: PlacementOption = "pack",
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Train a model from CONFIG; prints the run directory as the last line.

    With --ray, N Ray-placed workers train it together (MultiWorkerMirroredStrategy).
    """

    def action() -> Path:
        # the config, the data's headers and the device are checked before TensorFlow
        # loads (on a thread, while the data is read: `mlcli.training.train`)
        from mlcli.training.devices import parse_device

        progress = reporter(quiet, log_format)
        if device is not None:
            parse_device(device)  # a bad value is exit 2 before TensorFlow is needed
        request = _ray_request(ray, workers, cpus_per_worker, gpus_per_worker, placement)
        if ray is not None and request is not None:
            from mlcli.training.ray_train import train_on_ray

            return train_on_ray(
                config,
                address=ray,
                request=request,
                overrides=overrides or [],
                output_dir=output,
                resume=resume,
                device=device,
                reporter=progress,
                verbose=verbose,
            )
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
