"""The command line: each command parses its options, calls one library function, reports.

This is the only module that prints results or exits. `run_guarded` is the one error boundary:
mlcli's own errors become one line on stderr and their exit code (DESIGN.md), anything else
is exit 1 with a request for a bug report, and tracebacks show only with `--verbose`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from mlcli import __version__
from mlcli.errors import MlcliError
from mlcli.reporting import LogFormat, Reporter, make_reporter

app = typer.Typer(
    name="mlcli",
    help="Train, evaluate, predict, export and serve Keras models on tables, from one YAML config.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

T = TypeVar("T")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but results and errors.")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show TensorFlow's logs and tracebacks.")
]
LogFormatOption = Annotated[
    str, typer.Option("--log-format", help="Progress events as `text` or `json` lines.")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set training.epochs=3 (repeatable)."),
]


def _stderr() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _table_console() -> Console:
    """stdout for tables: as wide as the terminal, and 160 columns in a pipe or a file."""
    console = _stdout()
    if not console.is_terminal:
        console.width = 160
    return console


def _log_format(value: str) -> LogFormat:
    """`--log-format`, checked: text or json."""
    if value not in ("text", "json"):
        raise MlcliErrorUsage(f"--log-format: expected text or json, found {value!r}")
    return "json" if value == "json" else "text"


def _reporter(quiet: bool, log_format: str, *, interactive: bool | None = None) -> Reporter:
    """The reporter for the flags; a progress bar only when a person watches stdout."""
    watched = sys.stdout.isatty() if interactive is None else interactive
    return make_reporter(quiet=quiet, log_format=_log_format(log_format), interactive=watched)


def _reporter_with_tensorflow(quiet: bool, log_format: str, verbose: bool) -> Reporter:
    """The reporter of a command that runs a model, with TensorFlow imported quietly."""
    from mlcli._tensorflow import import_tensorflow

    reporter = _reporter(quiet, log_format)
    import_tensorflow(verbose=verbose)
    return reporter


class MlcliErrorUsage(MlcliError):
    """A bad command-line value (exit 2)."""

    exit_code = 2


_stop_requested: list[int] = []  # the signals received while an action runs


def _interrupt(signum: int, frame: Any) -> None:
    _stop_requested.append(signum)
    raise KeyboardInterrupt


def run_guarded(action: Callable[[], T], *, verbose: bool) -> T:
    """Runs a command's action behind the error boundary.

    A failure that follows SIGTERM is the stop it asked for (exit 130), not a bug: a worker of
    a cluster stopped at the same time can make the chief's collective fail before the chief's
    own KeyboardInterrupt arrives.
    """
    _stop_requested.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return action()
    except MlcliError as error:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        _stderr().print(f"error: {error}", markup=False)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        _stderr().print("error: interrupted", markup=False)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as error:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        if _stop_requested:
            _stderr().print(
                f"error: interrupted ({type(error).__name__} while stopping)", markup=False
            )
            raise typer.Exit(130) from None
        _stderr().print(
            f"internal error: {type(error).__name__}: {error}. This is a bug in mlcli; "
            "please report it with the output of the same command run with --verbose.",
            markup=False,
        )
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _version(value: bool) -> None:
    if value:
        print(f"mlcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """mlcli: from a YAML config and a table to a trained, served Keras model."""


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="The YAML config.")] = Path("config.yaml"),
    overrides: Overrides = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Runs folder instead of output.dir.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted (partial) run.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="auto, cpu, gpu, gpu:0,1, or cpu:N (N logical CPUs, for tests); "
            "default: training.device.",
        ),
    ] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Train a model from CONFIG; prints the run directory as the last line."""

    def action() -> Path:
        from mlcli._tensorflow import start_import

        # TensorFlow loads on a thread while the data is read, first thing; devices are
        # chosen before its runtime starts
        start_import(verbose=verbose)
        from mlcli.training.devices import parse_device

        reporter = _reporter(quiet, log_format)
        if device is not None:
            parse_device(device)  # a bad value is exit 2 before TensorFlow is needed
        from mlcli.training.train import train as train_model

        return train_model(
            config,
            overrides=overrides or [],
            output_dir=output,
            resume=resume,
            device=device,
            reporter=reporter,
            verbose=verbose,
        )

    run = run_guarded(action, verbose=verbose)
    print(run)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="The YAML config.")],
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
        print(
            json.dumps(
                {
                    "config": str(config),
                    "valid": True,
                    "sample_rows": report.sample_rows,
                    "features": report.feature_types,
                    "excluded": report.excluded,
                }
            )
        )
        return
    if quiet:
        return
    table = Table(title=f"{config}: valid ({report.sample_rows} sample rows read)")
    table.add_column("column")
    table.add_column("feature type")
    for name, kind in report.feature_types.items():
        table.add_row(name, kind)
    for name, why in report.excluded.items():
        table.add_row(name, f"excluded: {why}")
    table.add_row(
        report.config.target.column, f"target ({report.config.target.task or 'inferred'})"
    )
    _stdout().print(table)


# --- evaluate and predict ---------------------------------------------------------------------

DataOption = Annotated[
    str, typer.Option("--data", "-d", help="CSV or Parquet file (or glob, folder); - is stdin.")
]
DelimiterOption = Annotated[
    str | None, typer.Option("--delimiter", help="CSV delimiter, instead of the run's.")
]
SkipRowsOption = Annotated[
    int | None, typer.Option("--skip-rows", help="Lines to skip before the header or data.")
]
HeaderOption = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help="Whether the CSV's first row names the columns (detected when not given).",
    ),
]
ThresholdOption = Annotated[
    float, typer.Option("--threshold", help="Binary: positive when the probability is above it.")
]


def _csv_overrides(
    delimiter: str | None, skip_rows: int | None, header: bool | None
) -> dict[str, Any]:
    return {"delimiter": delimiter, "skip_rows": skip_rows, "header": header}


def _silence_stdout() -> None:
    """Points stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    import io
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def _print_evaluation(result: Any) -> None:
    table = Table(title=f"{result.run.name} on {result.data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if result.baseline:
        table.add_column("baseline", justify="right")
        table.add_column("change", justify="right")
    for name, value in result.metrics.items():
        if "/" in name or name in ("rows", "threshold"):
            continue
        row = [name, f"{value:.4f}"]
        if result.baseline:
            old = result.baseline.get(name)
            row += ["", ""] if old is None else [f"{old:.4f}", f"{value - old:+.4f}"]
        table.add_row(*row)
    rows = f"{int(result.metrics['rows'])} rows"
    if "threshold" in result.metrics:
        rows += f", threshold {result.metrics['threshold']:g}"
    table.caption = rows
    _stdout().print(table)


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="A run directory, or a run name under ./runs.")],
    data: DataOption,
    fail_under: Annotated[
        list[str] | None,
        typer.Option("--fail-under", help="Exit 5 when METRIC falls under VALUE: auc=0.9."),
    ] = None,
    fail_over: Annotated[
        list[str] | None,
        typer.Option("--fail-over", help="Exit 5 when METRIC rises over VALUE: log_loss=0.4."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one flat JSON object of metrics, nothing else.")
    ] = False,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Another run to compare on the same data.")
    ] = None,
    max_regression: Annotated[
        float | None,
        typer.Option("--max-regression", help="Exit 5 when the primary metric is this much worse."),
    ] = None,
    threshold: ThresholdOption = 0.5,
    delimiter: DelimiterOption = None,
    skip_rows: SkipRowsOption = None,
    header: HeaderOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Evaluate RUN on labelled data; writes evaluations/<data>-<time>/ in the run."""

    def action() -> Any:
        reporter = _reporter_with_tensorflow(quiet, log_format, verbose)
        from mlcli.evaluation.evaluate import run_evaluation

        return run_evaluation(
            run,
            data=data,
            fail_under=fail_under or [],
            fail_over=fail_over or [],
            baseline=baseline,
            max_regression=max_regression,
            threshold=threshold,
            csv_overrides=_csv_overrides(delimiter, skip_rows, header),
            stdin=sys.stdin.buffer,
            reporter=reporter,
        )

    result = run_guarded(action, verbose=verbose)
    if as_json:
        print(json.dumps(result.flat()))
    else:
        if not quiet:
            _print_evaluation(result)
        print(result.folder)
    run_guarded(result.raise_for_gates, verbose=verbose)


@app.command()
def predict(
    run: Annotated[str, typer.Argument(help="A run directory, or a run name under ./runs.")],
    data: DataOption,
    output: Annotated[
        str, typer.Option("--output", "-o", help="File (.csv .parquet .jsonl) or - for stdout.")
    ],
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", help="An input column copied to the output (repeatable)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Rows per model call and output batch.")
    ] = 65536,
    threshold: ThresholdOption = 0.5,
    output_format: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or jsonl (default: by suffix).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    delimiter: DelimiterOption = None,
    skip_rows: SkipRowsOption = None,
    header: HeaderOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Predict every row of the data with RUN, streaming; writes OUTPUT as it goes."""

    def action() -> Any:
        from mlcli._tensorflow import import_tensorflow

        # predictions may go to stdout: the progress bar follows stderr
        reporter = _reporter(quiet, log_format, interactive=sys.stderr.isatty() and output != "-")
        import_tensorflow(verbose=verbose)
        from mlcli.inference.predict import predict as predict_rows

        try:
            return _predict_rows(predict_rows, reporter)
        except BrokenPipeError:  # `| head` closed stdout: stop quietly, as Unix tools do
            _silence_stdout()
            raise typer.Exit(141) from None

    def _predict_rows(predict_rows: Callable[..., Any], reporter: Reporter) -> Any:
        return predict_rows(
            run,
            data=data,
            output=sys.stdout.buffer if output == "-" else output,
            keep=keep or [],
            batch_size=batch_size,
            threshold=threshold,
            format=output_format,
            force=force,
            csv_overrides=_csv_overrides(delimiter, skip_rows, header),
            stdin=sys.stdin.buffer,
            reporter=reporter,
        )

    summary = run_guarded(action, verbose=verbose)
    if output != "-":
        print(summary.output)


@app.command()
def init(
    data: Annotated[Path, typer.Argument(help="A CSV/TSV (maybe compressed) or Parquet file.")],
    target: Annotated[
        str, typer.Option("--target", "-t", help="The column to predict, or its 0-based number.")
    ],
    task: Annotated[
        str | None, typer.Option("--task", help="binary, multiclass or regression (inferred).")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where the config is written.")
    ] = Path("config.yaml"),
    columns: Annotated[
        str | None, typer.Option("--columns", help="Comma-separated names for a headerless CSV.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Write a commented starting config for DATA from a sample of its rows; trains nothing."""
    from mlcli.starter.init import init as init_config
    from mlcli.starter.init import report_dict, summary_table

    names = [name.strip() for name in columns.split(",")] if columns else None
    report = run_guarded(
        lambda: init_config(
            data, target=target, task=task, output=output, columns=names, force=force
        ),
        verbose=verbose,
    )
    if log_format == "json":
        print(json.dumps(report_dict(report), default=str))
        return
    if not quiet:
        _table_console().print(summary_table(report))
    print(report.config_path)


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Argument(
            help="A run directory or run name, or a SavedModel folder from `mlcli export`."
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free port).")] = 8501,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name in URLs (default: the run's name).")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Server processes, each with its own model.")
    ] = 1,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", help="Most rows per model call.")
    ] = 256,
    batch_timeout_ms: Annotated[
        float,
        typer.Option(
            "--batch-timeout-ms", help="Longest wait for requests being read to join a batch."
        ),
    ] = 1.0,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Largest request body (413 above).")
    ] = 4 * 1024 * 1024,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Serve MODEL on TensorFlow Serving's REST API until SIGTERM; one log line per request."""

    def action() -> None:
        from mlcli.serving.server import ServeOptions
        from mlcli.serving.server import serve as serve_model

        access_log_format = _log_format(log_format)
        options = ServeOptions(
            host=host,
            port=port,
            name=name,
            workers=workers,
            max_batch_size=max_batch_size,
            batch_timeout_ms=batch_timeout_ms,
            max_body_bytes=max_body_bytes,
        )
        serve_model(
            model,
            options=options,
            log_format=access_log_format,
            quiet=quiet,
            verbose=verbose,
        )

    run_guarded(action, verbose=verbose)


class _RunsGroup(TyperGroup):
    """`mlcli runs [NAME]` lists runs (the `list` command); `mlcli runs show RUN` shows one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(
    cls=_RunsGroup, help="List runs, newest first, and show or compare one run.", name="runs"
)
app.add_typer(runs_app)
RunsDir = Annotated[
    Path | None, typer.Option("--dir", help="The runs folder (default: $MLCLI_RUNS_DIR or runs).")
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@runs_app.command("list")
def runs_list(
    name: Annotated[str | None, typer.Argument(help="Only the runs of this name.")] = None,
    runs_dir: RunsDir = None,
    as_json: JsonOutput = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """List runs: name, id, status, start, duration and headline metrics (`mlcli runs`)."""
    from mlcli.runs.listing import list_runs, runs_folder

    found = run_guarded(lambda: list_runs(runs_dir, name=name), verbose=verbose)
    if as_json or log_format == "json":
        print(json.dumps([run.to_dict() for run in found]))
    elif not quiet:
        from mlcli.cli.views import runs_table

        title = f"{runs_folder(runs_dir)}: {len(found)} run{'s' * (len(found) != 1)}"
        _table_console().print(runs_table(found, title=title))


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="A run directory, a run name (its latest) or an id.")],
    diff: Annotated[
        str | None, typer.Option("--diff", help="Another run: config and metric differences.")
    ] = None,
    runs_dir: RunsDir = None,
    as_json: JsonOutput = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Show one run's status, metrics and artifacts, and with --diff its differences."""
    from mlcli.runs.listing import run_details

    details = run_guarded(lambda: run_details(run, runs_dir=runs_dir, diff=diff), verbose=verbose)
    if as_json or log_format == "json":
        print(json.dumps(details, default=str))
    elif not quiet:
        from mlcli.cli.views import details_view

        _table_console().print(details_view(details))


config_app = typer.Typer(
    name="config",
    help="The config's JSON Schema, and a config as mlcli reads it.",
    no_args_is_help=True,
)
app.add_typer(config_app)


@config_app.command("schema")
def config_schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Print the config's JSON Schema, for YAML language servers and CI linting."""
    from mlcli.starter.writing import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    from mlcli.files import write_text

    run_guarded(lambda: write_text(output, text), verbose=verbose)
    print(output)


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Argument(help="The YAML config.")],
    overrides: Overrides = None,
    verbose: Verbose = False,
) -> None:
    """Print CONFIG as mlcli reads it: ${VAR} filled, --set applied, every default written."""
    from mlcli.config.schema import config_to_yaml, load_config

    loaded, _ = run_guarded(lambda: load_config(config, overrides=overrides or []), verbose=verbose)
    sys.stdout.write(config_to_yaml(loaded))


def _print_trials(result: Any) -> None:
    """The tune command's table: one row per trial, the best marked."""
    table = Table(title=f"{result.directory}: {result.metric} ({result.direction})")
    table.add_column("trial", justify="right")
    for key in result.parameters:
        table.add_column(key)
    table.add_column(result.metric, justify="right")
    test_metric = "test." + result.metric.partition(".")[2]
    table.add_column(test_metric, justify="right")
    table.add_column("seconds", justify="right")
    for trial in result.trials:
        test = trial.metrics.get("test", {}).get(result.metric.partition(".")[2])
        marker = " *" if trial is result.best else ""
        table.add_row(
            f"{trial.number}{marker}",
            *[
                f"{v:.4g}" if isinstance(v, float) else str(v)
                for v in (trial.values.get(key) for key in result.parameters)
            ],
            trial.state if trial.score is None else f"{trial.score:.4f}",
            "" if test is None else f"{test:.4f}",
            f"{trial.seconds:.0f}",
        )
    _table_console().print(table)


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="The YAML config, with a `tune:` section.")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="How many trials.")] = 10,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="Start no new trial after this many seconds."),
    ] = None,
    overrides: Overrides = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Runs folder instead of output.dir.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or gpu.")] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Search the ranges in CONFIG's `tune:` section, one run per trial; prints the best
    config's path as the last line."""

    def action() -> Any:
        from mlcli.training.tune import tune as tune_config

        reporter = _reporter(quiet, log_format)

        return tune_config(
            config,
            trials=trials,
            timeout=timeout,
            overrides=overrides or [],
            output_dir=output,
            device=device,
            reporter=reporter,
            verbose=verbose,
        )

    result = run_guarded(action, verbose=verbose)
    if log_format == "json":
        print(json.dumps({"best_config": str(result.best_config), "best": vars(result.best)}))
    elif not quiet:
        _print_trials(result)
    print(result.best_config)


@app.command(name="export")
def export_model(
    run: Annotated[str, typer.Argument(help="A run directory, or a run name under ./runs.")],
    export_format: Annotated[
        str, typer.Option("--format", "-f", help="saved_model, keras, tflite or onnx.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Export folder (default: RUN/exports/FORMAT)."),
    ] = None,
    version: Annotated[
        int, typer.Option("--version", help="saved_model: the version folder (TF Serving).")
    ] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing export.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Export RUN's model and check it in its own runtime; prints the export folder."""

    def action() -> Path:
        reporter = _reporter_with_tensorflow(quiet, log_format, verbose)
        from mlcli.exporting.export import export

        return export(
            run,
            format=export_format,
            output=output,
            version=version,
            force=force,
            reporter=reporter,
            verbose=verbose,
        )

    print(run_guarded(action, verbose=verbose))


def main() -> None:
    """The console script's entry point.

    After a command that loaded TensorFlow the process ends without the interpreter's
    teardown, which unloads TensorFlow's modules and C++ runtime for over a second here and
    writes nothing: the output streams are flushed and the atexit handlers run first.
    """
    try:
        app()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code if isinstance(code, int) else int(code is not None))
