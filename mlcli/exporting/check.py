"""Checking an export against the trained Keras model, in the export's own runtime.

The sample is the rows training saved in the run (`sample.parquet`: the first validation rows,
raw). A run made before that file existed falls back to the first rows of the data its config
names (the validation table, or the training table when validation is a fraction of it; read
with a bounded reader, never the whole table), and, when that data is no longer readable, to
rows made from the schema's statistics and vocabularies. Two rows are always added: one with
every value missing and one with unseen categories, unseen words and numbers far from the
training mean. The export runs in a fresh Python process that
imports only its runtime (`mlcli/exporting/runtimes.py`); its outputs must match the Keras model's
within `|export - keras| <= ABSOLUTE_TOLERANCE * max(1, max |keras|) + RELATIVE_TOLERANCE *
|keras|` (`tolerance`: float32 rounding scales with the outputs), a NaN or infinite output on
either side fails, and its labels must match wherever the Keras model's decision is not within
that tolerance of a tie.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlcli.errors import MlcliError, RunError
from mlcli.exporting.formats import last_line, run_child
from mlcli.exporting.signature import (
    BINARY_THRESHOLD,
    KERAS_OUTPUT,
    LABEL,
    SIGNATURE_KEY,
    ServingSignature,
)
from mlcli.features.schema import ColumnSchema, FeatureSchema
from mlcli.inference.labels import as_text, predicted_labels
from mlcli.preprocessing.inputs import MISSING_VALUES, model_inputs
from mlcli.runs import directory as runs
from mlcli.runs.loading import LoadedRun

ABSOLUTE_TOLERANCE = 1e-4
RELATIVE_TOLERANCE = 1e-4
SAMPLE_ROWS = 200
CHECK_TIMEOUT_SECONDS = 600
UNSEEN_CATEGORY = "__mlcli_unseen__"


@dataclass
class CheckResult:
    """The outcome of one export check, as written to export.json."""

    runtime: str
    rows: int
    sample: str
    max_abs_difference: float
    worst_row: int
    label_mismatches: int
    absolute_tolerance: float = ABSOLUTE_TOLERANCE
    relative_tolerance: float = RELATIVE_TOLERANCE
    passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _edge_value(column: ColumnSchema, *, missing: bool) -> Any:
    if missing:
        return MISSING_VALUES[column.dtype]
    if column.dtype == "float32":
        return column.mean + 4.0 * float(np.sqrt(column.variance))
    if column.dtype == "int64":
        return max([int(v) for v in column.vocabulary] or [0]) + 1
    return f"{UNSEEN_CATEGORY} zzzunseen" if column.type == "text" else UNSEEN_CATEGORY


def _schema_value(column: ColumnSchema, row: int) -> Any:
    if column.dtype == "float32":
        return column.mean + ((row % 5) - 2) * float(np.sqrt(column.variance))
    vocabulary = column.vocabulary or [_edge_value(column, missing=False)]
    if column.type == "text":
        return " ".join(str(vocabulary[(row + k) % len(vocabulary)]) for k in range(4))
    value = vocabulary[row % len(vocabulary)]
    return int(value) if column.dtype == "int64" else str(value)


def _rows_from_schema(schema: FeatureSchema, rows: int) -> dict[str, np.ndarray]:
    return {
        c.name: _typed(c, [_schema_value(c, row) for row in range(rows)]) for c in schema.columns
    }


def _typed(column: ColumnSchema, values: list[Any]) -> np.ndarray:
    dtype = object if column.dtype == "string" else column.dtype
    return np.asarray(values, dtype=dtype).reshape(-1, 1)


def _saved_rows(loaded: LoadedRun, rows: int) -> pa.Table | None:
    """The rows training saved in the run (`sample.parquet`), or None for an older run."""
    import pyarrow.parquet as pq

    path = loaded.run.file(runs.SAMPLE)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise RunError(f"{path}: the run's sample rows do not read: {error}") from error
    return table.slice(0, rows)


def _head_of_the_data(loaded: LoadedRun, rows: int) -> tuple[pa.Table, str]:
    """The first rows of the table the run's config names for validation (or training)."""
    from mlcli.data.tables import read_sample, resolve_source

    data = loaded.config.data
    if isinstance(data.validation, float):  # validation rows were split off the training table
        role, source = "training", resolve_source(data.train, data=data)
    else:
        role, source = "validation", resolve_source(data.validation, data=data)
    return read_sample(source, rows), f"the {role} data {source.describe()}"


def _sample_rows(loaded: LoadedRun, rows: int) -> tuple[dict[str, np.ndarray], str]:
    schema = loaded.schema
    saved = _saved_rows(loaded, rows)
    if saved is not None:
        where = f"the run's {runs.SAMPLE}"
        return model_inputs(saved, schema, source=str(loaded.run.file(runs.SAMPLE))), where
    try:
        table, where = _head_of_the_data(loaded, rows)
        return model_inputs(table, schema, source=where), where
    except MlcliError:  # the data moved or changed since training: the schema still knows
        return _rows_from_schema(schema, rows), "the rows made from schema.json"


def sample_columns(
    loaded: LoadedRun, *, rows: int = SAMPLE_ROWS
) -> tuple[dict[str, np.ndarray], str]:
    """Raw input columns (rows, 1) for the check, and where the rows came from."""
    columns, source = _sample_rows(loaded, rows)
    count = len(next(iter(columns.values())))
    edges = {
        c.name: _typed(c, [_edge_value(c, missing=True), _edge_value(c, missing=False)])
        for c in loaded.schema.columns
    }
    merged = {name: np.concatenate([columns[name], edges[name]]) for name in columns}
    return merged, f"{count} rows of {source} + 1 all-missing row + 1 unseen-values row"


def run_in_runtime(
    export_format: str, model_path: Path, columns: dict[str, np.ndarray], schema: FeatureSchema
) -> tuple[str, dict[str, np.ndarray]]:
    """The export's outputs on `columns`, computed by its own runtime in a fresh process."""
    script = Path(__file__).with_name("runtimes.py")
    # SavedModel and TFLite take the signature's input names; keras and ONNX the columns' own
    names = ServingSignature.from_schema(schema).names
    by_signature = export_format in ("saved_model", "tflite")
    request = {
        "columns": {
            (names[c.name] if by_signature else c.name): {
                "dtype": c.dtype,
                "values": _json_values(columns[c.name]),
            }
            for c in schema.columns
        }
    }
    with tempfile.TemporaryDirectory(prefix="mlcli-export-check-") as folder:
        request_path, response_path = Path(folder, "request.json"), Path(folder, "response.json")
        request_path.write_text(json.dumps(request), encoding="utf-8")
        command = [sys.executable, "-I", str(script), export_format, str(model_path)]
        command += [str(request_path), str(response_path), "--signature", SIGNATURE_KEY]
        if export_format == "keras" and _uses_mlcli_layers(model_path):
            command += ["--import-path", str(Path(__file__).resolve().parents[2])]
        result = run_child(
            command,
            timeout=CHECK_TIMEOUT_SECONDS,
            timeout_message=f"--format {export_format}: the check did not finish in "
            f"{CHECK_TIMEOUT_SECONDS} s; nothing was written",
        )
        if result.returncode != 0 or not response_path.is_file():
            raise RunError(
                f"--format {export_format}: the export does not run in its own runtime: "
                f"{last_line(result.stderr + result.stdout)}"
            )
        response = json.loads(response_path.read_text(encoding="utf-8"))
    outputs = {name: np.asarray(values) for name, values in response["outputs"].items()}
    return str(response["runtime"]), outputs


def _json_values(array: np.ndarray) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in array.reshape(-1)]


def _uses_mlcli_layers(model_path: Path) -> bool:
    import zipfile

    with zipfile.ZipFile(model_path) as archive:
        return '"mlcli>' in archive.read("config.json").decode("utf-8")


def compare(
    export_format: str,
    outputs: dict[str, np.ndarray],
    reference: np.ndarray,
    schema: FeatureSchema,
    *,
    threshold: float = BINARY_THRESHOLD,
) -> tuple[float, int, int, bool]:
    """Largest difference, its row, label mismatches, and whether all is within tolerance.

    A binary export's labels are positive at probability >= `threshold` (the run's).
    """
    if export_format == "keras":
        found = outputs[KERAS_OUTPUT]
    else:
        found = ServingSignature.from_schema(schema).model_outputs(outputs)
    found = np.asarray(found, dtype=np.float64).reshape(len(reference), -1)
    expected = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    difference = np.abs(found - expected)
    # a NaN or infinite value on either side is a failure, never a pass (`NaN > tol` is False)
    broken = ~(np.isfinite(found) & np.isfinite(expected))
    difference[broken] = np.inf
    failing = (broken | (difference > tolerance(expected))).any(axis=1)
    per_row = difference.max(axis=1, initial=0.0)
    mismatches = _label_mismatches(outputs, reference, schema, threshold)
    within = not bool(failing.any()) and mismatches == 0
    if len(per_row) == 0:
        return 0.0, 0, mismatches, within
    worst = int(np.argmax(np.where(failing, per_row, -1.0) if failing.any() else per_row))
    return float(per_row[worst]), worst, mismatches, within


def tolerance(expected: np.ndarray) -> np.ndarray:
    """What each output may differ by: `ABSOLUTE_TOLERANCE * scale + RELATIVE_TOLERANCE * |v|`.

    `scale` is `max(1, max |reference|)` over the finite reference outputs: float32 rounding
    grows with the outputs' magnitude (a regression in thousands, periodic embeddings), so an
    absolute bound alone is not sound for float32.
    """
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return ABSOLUTE_TOLERANCE * scale + RELATIVE_TOLERANCE * np.abs(expected)


def _label_mismatches(
    outputs: dict[str, np.ndarray], reference: np.ndarray, schema: FeatureSchema, threshold: float
) -> int:
    if LABEL not in outputs:
        return 0
    labels = predicted_labels(reference, schema.target, threshold=threshold)
    expected = np.asarray(as_text(labels.to_pylist()))
    if schema.target.task == "binary":
        margin = np.abs(reference.reshape(-1) - threshold)
    else:
        top = np.sort(reference, axis=1)
        margin = top[:, -1] - top[:, -2]
    decided = margin > ABSOLUTE_TOLERANCE
    return int(np.sum((outputs[LABEL].astype(str) != expected) & decided))
