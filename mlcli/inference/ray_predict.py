"""`mlcli predict --ray`: a table predicted by a Ray Data pipeline into a folder of part files.

The table (a file, a glob or a folder of CSV/Parquet files) is found and its CSV dialect settled
exactly as the local predict does (`mlcli.data.sources.source_for_run`), and Ray Data reads the
same files with the same pyarrow options (`mlcli.data.csv_files.reader_options`). Blocks of rows
go through an actor pool (`mlcli.inference.ray_batches.RunActor`): each actor loads the run
once, the light path where the run has it (its `core.onnx` is written and checked here, on the
driver, before any actor starts), else the Keras model. Each write task writes one part file,
`part-000000.parquet`, ... with predict's own writers, into a temporary folder beside OUTPUT that
is renamed to OUTPUT once every part is written (`mlcli.files.atomic_directory`): OUTPUT is
complete or absent. Row order is kept, so the parts read in name order are the local predict's
output row for row.

```python
mlcli.inference.ray_predict.predict_on_ray(
    "runs/adult-income", data="new/", output="scores/", address="local", keep=["id"]
)
```
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcli import files
from mlcli._ray import connect, parse_address, require_ray
from mlcli.errors import ConfigError, DataError, MlcliError, RunError
from mlcli.inference.labels import threshold_origin
from mlcli.inference.predict import DEFAULT_BATCH_SIZE, check_options, input_column_types
from mlcli.inference.writers import FORMATS
from mlcli.reporting import QuietReporter, Reporter

if TYPE_CHECKING:
    from mlcli.data.remote import RemoteTable
    from mlcli.data.tables import TableSource
    from mlcli.features.schema import FeatureSchema

COMMAND = "mlcli predict"
DEFAULT_FORMAT = "parquet"
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}


@dataclass
class RayPredictionSummary:
    """What one `predict --ray` did: rows and part files written, where, and how fast."""

    rows: int
    parts: int
    seconds: float  # from connecting to Ray to the folder renamed into place
    output: str
    actors: int
    runtime: str  # onnxruntime (the light path) or keras
    startup_seconds: float = 0.0  # connecting to (or starting) Ray


def folder_format(output: Path, requested: str | None) -> str:
    """The part files' format: `requested`, else OUTPUT's suffix (`scores.csv/`), else Parquet."""
    if requested is not None:
        if requested not in FORMATS:
            raise ConfigError(
                f"--format: expected one of {', '.join(FORMATS)}, found {requested!r}"
            )
        return requested
    return _SUFFIX_FORMATS.get(output.suffix.lower(), DEFAULT_FORMAT)


def actor_pool(cpus: float, requested: int | None, *, nodes: int = 1) -> int:
    """How many actors predict: `requested`, else every CPU of the cluster but one per node.

    Each actor holds one CPU for as long as the pipeline runs; Ray Data's read and write tasks
    need the others (a node's spare CPU reads and writes for its actors): a pool that held
    every CPU would leave them waiting for one that no actor gives back, and hang.
    """
    most = max(1, int(cpus) - 1)
    if requested is None:
        return max(1, int(cpus) - max(1, nodes))
    if requested > most:
        raise ConfigError(
            f"--actors {requested}: the cluster has {cpus:g} CPUs and each actor holds one; "
            f"expected at most {most}, leaving a CPU to read and write the parts"
        )
    return requested


def _only_parts(folder: Path) -> None:
    """Refuses (`ConfigError`) to replace a folder holding anything but prediction parts."""
    from mlcli.inference.ray_batches import is_part

    owned = [entry.name for entry in folder.iterdir() if is_part(entry.name)]
    files.check_replaceable(folder, owned=owned, what="a folder of prediction parts")


def _check_output(final: Path, *, force: bool) -> None:
    if final.exists() or final.is_symlink():
        if not force:
            raise ConfigError(f"--output {final}: already exists; pass --force to replace it")
        files.check_destination(final, force=True, replaceable=_only_parts)


def _source(
    run_config: Any,
    data: str | Path,
    schema: FeatureSchema,
    keep: Sequence[str],
    csv_overrides: Mapping[str, Any] | None,
) -> TableSource | RemoteTable:
    from mlcli.data.remote import is_uri, remote_table
    from mlcli.data.sources import STDIN, source_for_run
    from mlcli.data.tables import check_header

    if str(data) == STDIN:
        raise ConfigError("--data -: --ray reads files that every Ray node can read, not stdin")
    if is_uri(str(data)):  # s3://, gs://, file://...: read through pyarrow's filesystems
        return remote_table(
            run_config, str(data), names=schema.input_names, csv_overrides=csv_overrides
        )
    source = source_for_run(run_config, data, names=schema.input_names, csv_overrides=csv_overrides)
    check_header(source, [*schema.input_names, *[k for k in keep if k not in schema.input_names]])
    return source


def _read(source: TableSource | RemoteTable, schema: FeatureSchema, keep: Sequence[str]) -> Any:
    """The Ray dataset of the source's files, parsed as the local predict parses them."""
    import ray.data

    from mlcli.data.csv_files import reader_options

    paths = [str(path) for path in source.paths]
    filesystem = getattr(source, "filesystem", None)  # a URI's; None: the local one
    needed = [*schema.input_names, *[k for k in keep if k not in schema.input_names]]
    if source.format == "parquet":
        return ray.data.read_parquet(
            paths, columns=needed, partitioning=None, filesystem=filesystem
        )
    read, parse, convert = reader_options(source.csv, column_types=input_column_types(schema, keep))
    # the local reader checks UTF-8 itself, naming the row; on Ray pyarrow checks it
    convert.check_utf8 = True
    return ray.data.read_csv(
        paths,
        read_options=read,
        parse_options=parse,
        convert_options=convert,
        filesystem=filesystem,
        partitioning=None,  # type: ignore[arg-type]  # Ray reads None as "no partitions"
    )


_RAY_CSV_ERROR = re.compile(r"(Failed to read CSV file: [^\n]*?)\. Please check")


def _unwrapped(error: BaseException, source: str) -> MlcliError | None:
    """The mlcli error (or pyarrow's reading error, as a `DataError`) behind a Ray error."""
    import pyarrow as pa

    from mlcli.data.csv_files import unreadable

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # RayTaskError: the error raised in the worker
        if isinstance(cause, MlcliError):
            return type(cause)(*cause.args)
        if isinstance(current, MlcliError) and type(current).__module__.startswith("mlcli"):
            return current
        if isinstance(cause, pa.ArrowException):
            return unreadable(source, cause)
        if isinstance(current, pa.ArrowException):  # Ray's planning: files' schemas merged
            return unreadable(source, current)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    # Ray Data's CSV reader wraps pyarrow's error in a ValueError whose cause is lost on its
    # way from the worker: its text is all that is left
    failed = _RAY_CSV_ERROR.search(str(error))
    if failed is None:
        return None
    return DataError(
        f"{source}: cannot read the table: {failed.group(1)}; expected CSV rows as the run "
        "reads them (the local mlcli predict names the line)"
    )


@contextlib.contextmanager
def _ordered_quiet_data() -> Iterator[None]:
    """Ray Data keeps the rows' order, draws no progress bars and raises an actor's own error."""
    from ray.data import DataContext

    context = DataContext.get_current()
    options = context.execution_options
    before = (options.preserve_order, context.enable_progress_bars)
    original = context.raise_original_map_exception
    options.preserve_order = True
    context.enable_progress_bars = False
    context.raise_original_map_exception = True  # an actor's DataError, not UserCodeException
    try:
        yield
    finally:
        options.preserve_order, context.enable_progress_bars = before
        context.raise_original_map_exception = original


def predict_on_ray(
    run: str | Path,
    *,
    data: str | Path,
    output: str | Path,
    address: str = "local",
    keep: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: float | None = None,
    format: str | None = None,
    force: bool = False,
    actors: int | None = None,
    csv_overrides: Mapping[str, Any] | None = None,
    reporter: Reporter | None = None,
) -> RayPredictionSummary:
    """Predicts `data` with a run on a Ray cluster into the folder `output`, atomically.

    Args:
        run: a run directory or name; every Ray node must read it at the same path.
        data: a CSV/Parquet file, glob or folder, read with the run's CSV settings.
        output: the folder of part files to create (it must not exist, unless `force`).
        address: the Ray cluster (`mlcli._ray.connect`): local, auto, HOST:PORT, ray://...
        keep: input columns copied to the output unchanged (an id).
        batch_size: rows per block given to an actor (and per model call).
        threshold: binary tasks: the decision threshold (None: the run's saved one, else 0.5).
        format: csv, parquet or jsonl; by default OUTPUT's suffix, else Parquet.
        force: replace an existing OUTPUT that holds nothing but prediction parts.
        actors: the size of the actor pool (one CPU each); None: every CPU of the cluster.
        csv_overrides: CSV options from the command line (`delimiter`, `skip_rows`, `header`).
        reporter: where progress goes.
    """
    reporter = reporter or QuietReporter()
    from mlcli.data.remote import is_uri

    if is_uri(str(output)):
        raise ConfigError(
            f"--output {output}: --ray writes a local or shared folder, renamed into place when "
            "complete; an object store has no such rename: write to a shared folder, then copy"
        )
    final = Path(output)
    chosen = folder_format(final, format)
    _check_output(final, force=force)
    if actors is not None and actors < 1:
        raise ConfigError(f"--actors: expected 1 or more actors, found {actors}")
    require_ray(COMMAND)
    parse_address(address)  # a malformed address fails before the run loads
    from mlcli.runs.loading import open_run

    loaded = open_run(run, with_model=False)
    given = threshold
    threshold = check_options(loaded, keep, batch_size, threshold, None)
    source = _source(loaded.config, data, loaded.schema, keep, csv_overrides)
    runtime = _prepare_runtime(loaded, reporter=reporter)
    if loaded.schema.target.task == "binary":
        origin = threshold_origin(given, loaded.threshold)
        reporter.event("threshold", f"positive at probability >= {threshold:g} ({origin})")
    started = time.monotonic()
    with connect(address, command=COMMAND) as cluster:
        startup = time.monotonic() - started
        pool = actor_pool(cluster.cpus, actors, nodes=cluster.nodes)
        reporter.event(
            "ray",
            f"{cluster.nodes} node(s), {cluster.cpus:g} CPUs; {pool} actor(s) predicting",
            address=address,
            nodes=cluster.nodes,
            cpus=cluster.cpus,
            actors=pool,
            seconds=round(startup, 3),
        )
        rows, parts = _run_pipeline(
            loaded.run.path,
            source,
            loaded.schema,
            final=final,
            format=chosen,
            force=force,
            keep=keep,
            threshold=threshold,
            batch_size=batch_size,
            actors=pool,
        )
    seconds = time.monotonic() - started
    reporter.event(
        "predicted",
        f"{rows} rows in {parts} part(s) in {seconds:.1f}s "
        f"({rows / max(seconds, 1e-9):.0f} rows/s)",
        rows=rows,
        parts=parts,
        seconds=seconds,
    )
    return RayPredictionSummary(
        rows=rows,
        parts=parts,
        seconds=seconds,
        output=str(final),
        actors=pool,
        runtime=runtime,
        startup_seconds=startup,
    )


def _prepare_runtime(loaded: Any, *, reporter: Reporter) -> str:
    """Settles the light path on the driver, writing `core.onnx` once for every actor.

    Returns the runtime the actors will use (onnxruntime or keras) and sends the `inference`
    event; the Keras model is not loaded here.
    """
    from mlcli.inference.choice import ENVIRONMENT, light_choice, requested

    choice = light_choice(loaded.run, loaded.schema)
    if choice.predictor is None and requested() == "onnxruntime":
        raise RunError(
            f"{loaded.run.path}: {ENVIRONMENT}=onnxruntime, but the light path cannot be taken: "
            f"{choice.reason}; unset {ENVIRONMENT} to use the Keras model"
        )
    runtime = "onnxruntime" if choice.predictor is not None else "keras"
    reporter.event("inference", choice.describe(), runtime=runtime, reason=choice.reason or None)
    return runtime


def _run_pipeline(
    run: Path,
    source: TableSource | RemoteTable,
    schema: FeatureSchema,
    *,
    final: Path,
    format: str,
    force: bool,
    keep: Sequence[str],
    threshold: float,
    batch_size: int,
    actors: int,
) -> tuple[int, int]:
    """Reads, predicts and writes the parts into a folder renamed to `final`: (rows, parts)."""
    from ray.data import ActorPoolStrategy

    from mlcli.inference.ray_batches import PartSink, RunActor, write_empty_part

    with (
        _ordered_quiet_data(),
        files.atomic_directory(final, force=force, replaceable=_only_parts) as folder,
    ):
        sink = PartSink(folder, format)
        try:
            predicted = _read(source, schema, keep).map_batches(
                RunActor,
                fn_constructor_kwargs={
                    "run": str(run),
                    "keep": list(keep),
                    "threshold": threshold,
                    "batch_rows": batch_size,
                    "csv": source.csv if source.format == "csv" else None,
                    "source": source.describe(),
                },
                compute=ActorPoolStrategy(size=actors),
                batch_size=batch_size,
                batch_format="pyarrow",
                num_cpus=1,
            )
            predicted.write_datasink(sink)
        except Exception as error:
            found = _unwrapped(error, source.describe())
            if found is not None:
                raise found from None
            raise
        parts = len(list(folder.iterdir()))
        if parts == 0:  # no rows: one part with the columns alone, as the local predict writes
            write_empty_part(folder, format, schema, keep=keep, threshold=threshold)
            parts = 1
        folder.chmod(0o755)  # mkdtemp's 0700 would hide the predictions from a team's readers
    return sink.rows, parts
