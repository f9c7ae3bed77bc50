"""`mlcli predict`: a table streamed through a run's model into CSV, Parquet or JSON lines.

The input is read in record batches (pyarrow, fixed column types), each batch goes through the
model and is written at once, so memory stays flat whatever the file's size. The same pass counts
each input column against the training distribution (`features.drift`): the report is written
beside a file output as `<output>.drift.json` (for standard output it goes only into the final
`drift` event), and `fail_on_drift` raises `QualityGateError` (exit 5) once the predictions are
complete when a column's PSI passes it. The output file is
written under a hidden temporary name (`.<name>.<hex>.partial`) and renamed only when complete;
an interrupted predict removes it, and a killed one never leaves a file that looks finished.

```python
mlcli.predict("runs/adult-income", data="new.csv", output="scores.parquet", keep=["id"])
```
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from mlcli import files
from mlcli.errors import ConfigError, QualityGateError
from mlcli.inference.labels import (
    BINARY_THRESHOLD,
    decision_threshold,
    predicted_labels,
    threshold_origin,
)
from mlcli.inference.writers import FORMATS, open_writer
from mlcli.reporting import QuietReporter, Reporter

if TYPE_CHECKING:  # numpy, pyarrow and what uses them load once the arguments are checked
    import numpy as np
    import pyarrow as pa

    from mlcli.data.tables import TableSource
    from mlcli.features.drift import DriftMonitor, DriftReport
    from mlcli.features.schema import FeatureSchema
    from mlcli.inference.light import Runner
    from mlcli.inference.writers import BatchWriter
    from mlcli.runs.loading import LoadedRun

DEFAULT_BATCH_SIZE = 65536
PREDICTION = "prediction"
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
_SUFFIX_FORMATS[".ndjson"] = "jsonl"
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
T = TypeVar("T")


@dataclass
class PredictionSummary:
    """What one predict did: rows written, seconds taken, and where to."""

    rows: int
    seconds: float
    output: str
    cpu_seconds: float = 0.0  # every thread of the process, from first read to last write
    drift: DriftReport | None = None
    drift_file: str | None = None  # where the drift report was written (None for stdout)


def drift_path(output: Path) -> Path:
    """Where predict writes the drift report of `output`: `<output>.drift.json` beside it."""
    return output.with_name(f"{output.name}.drift.json")


def output_format(output: str | Path, requested: str | None) -> tuple[str, str | None]:
    """The format (csv, parquet, jsonl) and compression of an output path or `-`."""
    if requested is not None and requested not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, found {requested!r}")
    if str(output) == "-":
        if requested == "parquet":
            raise ConfigError("--output -: standard output takes csv or jsonl, not parquet")
        return requested or "csv", None
    suffixes = [s.lower() for s in Path(output).suffixes]
    compression = _COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes.pop()
    found = _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    chosen = requested or found
    if chosen is None:
        raise ConfigError(
            f"--output {output}: cannot tell the format from the suffix; use .csv, .parquet or "
            ".jsonl (optionally .gz/.zst for text), or pass --format csv|parquet|jsonl"
        )
    if compression and chosen == "parquet":
        raise ConfigError(f"--output {output}: Parquet compresses itself; drop the {suffixes[-1]}")
    return chosen, compression


def prediction_columns(schema: FeatureSchema) -> list[str]:
    """The names of the columns predict adds after the kept ones."""
    target = schema.target
    if target.task == "regression":
        return [PREDICTION]
    if target.task == "binary":
        return [PREDICTION, f"probability_{target.positive_class}"]
    return [PREDICTION, *(f"probability_{value}" for value in target.classes)]


def input_column_types(schema: FeatureSchema, keep: Sequence[str]) -> dict[str, pa.DataType]:
    """Fixed Arrow types for CSV columns, so that every batch parses the same way.

    Kept columns are read as text, so they pass through exactly as written (`007` stays).
    """
    import pyarrow as pa

    types: dict[str, pa.DataType] = {name: pa.string() for name in keep}
    arrow = {"float32": pa.float64(), "int64": pa.int64(), "string": pa.string()}
    types.update({column.name: arrow[column.dtype] for column in schema.columns})
    return types


def predictions_table(
    outputs: np.ndarray,
    schema: FeatureSchema,
    *,
    kept: pa.Table | None = None,
    threshold: float = BINARY_THRESHOLD,
) -> pa.Table:
    """What predict writes for `outputs`: `kept`'s columns, then `prediction_columns(schema)`.

    `prediction` holds the user's own labels (or the values); each `probability_<class>`
    column a probability as float32.
    """
    import pyarrow as pa

    columns: dict[str, Any] = {}
    if kept is not None:
        columns.update(zip(kept.column_names, kept.columns, strict=True))
    names = prediction_columns(schema)
    columns[PREDICTION] = predicted_labels(outputs, schema.target, threshold=threshold)
    for index, name in enumerate(names[1:]):
        columns[name] = pa.array(outputs[:, index], pa.float32())
    return pa.table(columns)


def _needed(schema: FeatureSchema, keep: Sequence[str]) -> list[str]:
    return [*schema.input_names, *[k for k in keep if k not in schema.input_names]]


def _batches(
    source: TableSource, schema: FeatureSchema, keep: Sequence[str], batch_size: int
) -> Iterator[pa.Table]:
    import pyarrow as pa

    from mlcli.data.tables import iter_batches, require_columns

    needed = _needed(schema, keep)
    checked = False
    for batch in iter_batches(
        source,
        columns=needed,
        column_types=input_column_types(schema, keep),
        batch_rows=batch_size,
    ):
        if not checked:
            require_columns(batch.schema.names, needed, source=source.describe())
            checked = True
        yield pa.Table.from_batches([batch])


def check_options(
    loaded: LoadedRun,
    keep: Sequence[str],
    batch_size: int,
    threshold: float | None,
    fail_on_drift: float | None,
) -> float:
    """Checks the options; returns the decision threshold in force (`decision_threshold`)."""
    if fail_on_drift is not None and not (math.isfinite(fail_on_drift) and fail_on_drift >= 0):
        raise ConfigError(
            f"--fail-on-drift: expected a PSI bound of 0 or more (e.g. 0.2), found {fail_on_drift}"
        )
    if batch_size < 1:
        raise ConfigError(f"--batch-size: expected a positive number of rows, found {batch_size}")
    chosen = decision_threshold(threshold, loaded.threshold)
    clash = sorted(set(keep) & set(prediction_columns(loaded.schema)))
    if clash:
        raise ConfigError(f"--keep {clash[0]}: predict writes a column of that name itself")
    return chosen


def _stream(
    predictor: Runner,
    source: TableSource,
    writer: BatchWriter,
    *,
    keep: Sequence[str],
    threshold: float,
    monitor: DriftMonitor,
    reporter: Reporter,
) -> int:
    """Reads, predicts and writes every batch, counting drift; returns the number of rows.

    Reading, encoding (with the drift counts), the model and writing each run on a thread of
    their own (`inference.pipeline`), two batches at most waiting between two of them.
    """
    import pyarrow as pa

    from mlcli.inference.pipeline import staged

    schema, started, rows = predictor.schema, time.monotonic(), 0

    def encode(table: pa.Table) -> tuple[pa.Table, Any]:
        prepared = predictor.prepare(table, source=source.describe())
        monitor.update(table)
        return table, prepared

    def run(item: tuple[pa.Table, Any]) -> pa.Table:
        table, prepared = item
        outputs = predictor.run(prepared)
        kept = table.select(list(keep))
        return predictions_table(outputs, schema, kept=kept, threshold=threshold)

    batches = _batches(source, schema, keep, predictor.batch_rows)
    for predictions in staged(batches, [encode, run], name="mlcli-predict"):
        writer.write(predictions)
        rows += predictions.num_rows
        elapsed = max(time.monotonic() - started, 1e-9)
        reporter.advance(predictions.num_rows, rows_per_s=round(rows / elapsed))
    if rows == 0:  # an empty input still gets a header (CSV) or a schema (Parquet)
        empty = pa.table({name: pa.array([], pa.string()) for name in keep})
        outputs = predictor.no_outputs()
        writer.write(predictions_table(outputs, schema, kept=empty, threshold=threshold))
    return rows


def _partial_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.{secrets.token_hex(4)}.partial")


def predict(
    run: str | Path,
    *,
    data: str | Path,
    output: str | Path | BinaryIO,
    keep: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: float | None = None,
    format: str | None = None,
    force: bool = False,
    fail_on_drift: float | None = None,
    csv_overrides: Mapping[str, Any] | None = None,
    stdin: BinaryIO | None = None,
    reporter: Reporter | None = None,
) -> PredictionSummary:
    """Streams `data` through a run's model and writes the predictions to `output`.

    Args:
        run: a run directory or name.
        data: a CSV/Parquet file (or glob, folder); `-` reads CSV from `stdin`.
        output: a file path (format from its suffix or `format`), or a binary stream.
        keep: input columns copied to the output unchanged (an id).
        batch_size: rows per model call.
        threshold: binary tasks: a row is the positive class when its probability is at or
            above it; None: the threshold saved in the run (`evaluate --choose-threshold
            --save`), else 0.5.
        format: csv, parquet or jsonl, overriding the output's suffix.
        force: replace an existing output file (and its drift report).
        fail_on_drift: raise `QualityGateError` (exit 5), once the predictions and the drift
            report are written, when a column's PSI is above this bound.
        csv_overrides: CSV options from the command line (`delimiter`, `skip_rows`, `header`).
        stdin: the stream `-` reads.
        reporter: where progress goes.
    """
    reporter = reporter or QuietReporter()
    stream = None if isinstance(output, str | Path) else output
    chosen, compression = output_format("-" if stream else str(output), format)
    final = None if stream is not None else Path(str(output))
    for path in (final, drift_path(final)) if final is not None else ():
        if path.exists() and not force:
            raise ConfigError(
                f"--output {final}: {path} already exists; pass --force to replace it"
            )
    # every argument, path and the data's header are checked before TensorFlow loads, each
    # before the modules the next check needs (pydantic for the run, pyarrow for the header)
    from mlcli.runs.loading import open_run

    loaded = open_run(run, with_model=False)
    given, threshold = threshold, check_options(loaded, keep, batch_size, threshold, fail_on_drift)
    from mlcli.data.sources import source_for_run
    from mlcli.data.tables import check_header

    source = source_for_run(
        loaded.config,
        data,
        names=loaded.schema.input_names,
        csv_overrides=csv_overrides,
        stdin=stdin,
    )
    check_header(source, _needed(loaded.schema, keep))
    # numpy, pyarrow's kernels and the runtimes load only now, once the arguments are good
    from mlcli.features.drift import DriftMonitor
    from mlcli.inference.choice import choose_predictor, requested

    requested()  # MLCLI_INFERENCE is checked with the arguments, before any model loads
    # the light path, or the Keras model (which imports TensorFlow, quietly): the first event
    predictor = choose_predictor(
        loaded.run, loaded.schema, reporter=reporter, batch_rows=batch_size
    )
    if loaded.schema.target.task == "binary":
        origin = threshold_origin(given, loaded.threshold)
        reporter.event("threshold", f"positive at probability >= {threshold:g} ({origin})")
    if final is not None:  # like export, predict creates the output's missing folders
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"--output {final}: cannot create the folder {final.parent} "
                f"({error.strerror or error}); expected a folder path that can be written"
            ) from error
    temporary = _partial_path(final) if final is not None else None
    started, cpu_started = time.monotonic(), time.process_time()
    writer = open_writer(chosen, temporary or stream, compression=compression)
    monitor = DriftMonitor(loaded.schema)
    reporter.start_progress("predicting", None)
    try:
        rows = _stream(
            predictor,
            source,
            writer,
            keep=keep,
            threshold=threshold,
            monitor=monitor,
            reporter=reporter,
        )
        writer.close()
        if temporary is not None and final is not None:
            os.replace(temporary, final)
    finally:
        reporter.stop_progress()
        writer.abort()
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu_started
    rate = rows / max(seconds, 1e-9)
    reporter.event(
        "predicted",
        f"{rows} rows in {seconds:.1f}s ({rate:.0f} rows/s)",
        rows=rows,
        seconds=seconds,
        cpu_seconds=cpu,
    )
    summary = PredictionSummary(
        rows=rows, seconds=seconds, output=str(final or "-"), cpu_seconds=cpu
    )
    _report_drift(summary, monitor.finish(), final=final, reporter=reporter)
    failure = (
        summary.drift.failure(fail_on_drift)
        if summary.drift and fail_on_drift is not None
        else None
    )
    if failure:
        written = f"; predictions in {summary.output}" if final is not None else ""
        where = f", drift report in {summary.drift_file}" if summary.drift_file else ""
        raise QualityGateError(failure + written + where)
    return summary


def _report_drift(
    summary: PredictionSummary, report: DriftReport, *, final: Path | None, reporter: Reporter
) -> None:
    """Writes the drift report beside a file output and sends the `drift` event."""
    summary.drift = report
    if final is not None:
        path = drift_path(final)
        files.write_json(path, report.to_dict())
        summary.drift_file = str(path)
    reporter.event(
        "drift",
        report.summary() + (f" ({summary.drift_file})" if summary.drift_file else ""),
        psi=report.psi(),
        file=summary.drift_file,
    )
