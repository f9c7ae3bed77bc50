"""Writing a run's `core.onnx`: its core network (and calibration) in ONNX, checked first.

The core of the Keras model (the network over the encoded columns, `mlcli.models.core`) is
traced as one `tf.function` and converted by tf2onnx; a calibrated model's ONNX file has a
second output, the probabilities before calibration. Before anything is written, the file runs
in ONNX Runtime behind the Arrow encoder (`mlcli.inference.light`) on the run's sample rows
(`sample.parquet`) and on rows made from the schema (every vocabulary value, an unseen value,
missing values, numbers across 6 standard deviations), and must give the Keras model's outputs
within `LIGHT_TOLERANCE` relative to their scale. The figures go to manifest.json as
`checks.light` (with the file's SHA-256), then `core.onnx` is written: both atomically, so a
reader sees a checked file or none.

The conversion needs TensorFlow; predict, evaluate and serve run it on first use in a child
process (`convert_in_child`, `python -m mlcli.inference.conversion RUN`), so that they never
import TensorFlow themselves. `mlcli export`, which has the model loaded, calls
`write_light_core` directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlcli import files
from mlcli.features.schema import ColumnSchema, FeatureSchema
from mlcli.inference.comparison import compare_outputs
from mlcli.inference.light import CHECK, LightPredictor
from mlcli.preprocessing.arrow import encode_features
from mlcli.preprocessing.inputs import CALIBRATION_LAYER, CORE_MODEL, encoded_input_name
from mlcli.runs import directory as runs

# ORT and TensorFlow's kernels round float32 differently by an ulp or so; periodic numeric
# embeddings amplify that (see `training.fit.COMPOSITION_TOLERANCE`, the same bound).
LIGHT_TOLERANCE = 1e-3
ONNX_OPSET = 17
SAMPLE_ROWS = 2048
CONVERSION_TIMEOUT_SECONDS = 600


def recorded_check(run: runs.Run) -> dict[str, Any] | None:
    """manifest.json's `checks.light` (None: no conversion was recorded)."""
    check = (runs.read_manifest(run).get("checks") or {}).get(CHECK)
    return check if isinstance(check, dict) else None


def describe_check(check: dict[str, Any]) -> str:
    """One line on a fresh check: rows, difference, seconds."""
    difference = check.get("max_relative_difference")
    shown = "n/a" if difference is None else f"{difference:.2g}"
    return (
        f"core.onnx written and checked against the Keras model on {check.get('rows')} rows, "
        f"max relative difference {shown}, in {check.get('seconds', 0):.1f}s"
    )


def _core_function(model: Any) -> tuple[Any, list[Any], list[str]]:
    """The core (and calibration) as a `tf.function`, its input specs and the encoded names."""
    import tensorflow as tf

    core = model.get_layer(CORE_MODEL)
    try:
        calibration = model.get_layer(CALIBRATION_LAYER)
    except ValueError:
        calibration = None
    names = list(core.input)  # the encoded outputs' names (`numeric`, `categorical__<column>`)
    specs = [
        tf.TensorSpec((None, *core.input[name].shape[1:]), core.input[name].dtype, name=f"in_{i}")
        for i, name in enumerate(names)
    ]

    def call(*tensors: Any) -> Any:
        outputs = core(dict(zip(names, tensors, strict=True)), training=False)
        if calibration is None:
            return outputs
        return calibration(outputs), outputs

    return tf.function(call, input_signature=specs), specs, names


def convert_core(model: Any) -> bytes:
    """The Keras model's core (and calibration) as ONNX bytes, inputs named as encoded."""
    import tf2onnx

    function, specs, names = _core_function(model)
    with _quiet_tf2onnx():
        proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=ONNX_OPSET)
    renamed = {f"in_{index}": name for index, name in enumerate(names)}
    for tensor in proto.graph.input:
        tensor.name = renamed.get(tensor.name.split(":")[0], tensor.name)
    for node in proto.graph.node:
        for index, name in enumerate(node.input):
            base = name.split(":")[0]
            if base in renamed:
                node.input[index] = renamed[base]
    proto.doc_string = "mlcli core network: " + ", ".join(encoded_input_name(n) for n in names)
    return bytes(proto.SerializeToString())


class _quiet_tf2onnx:
    """tf2onnx logs every step at INFO; only its errors are kept."""

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger("tf2onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def check_rows(run: runs.Run, schema: FeatureSchema) -> pa.Table:
    """The run's sample rows (if kept) and rows made from the schema, raw."""
    tables = [_schema_rows(schema)]
    sample = run.file(runs.SAMPLE)
    if sample.is_file():
        import pyarrow.parquet as pq

        read = pq.read_table(sample, columns=schema.input_names).slice(0, SAMPLE_ROWS)
        tables.insert(0, read.cast(tables[0].schema))
    return pa.concat_tables(tables)


def _schema_rows(schema: FeatureSchema) -> pa.Table:
    """Every vocabulary value, an unseen one, missing values and numbers across +-3 std."""
    width = max([len(c.vocabulary or []) + 2 for c in schema.columns] + [13])
    return pa.table({column.name: _column_values(column, width) for column in schema.columns})


def _column_values(column: ColumnSchema, rows: int) -> pa.Array:
    if column.dtype == "float32":
        mean = float(column.mean or 0.0)
        deviation = float(np.sqrt(column.variance or 1.0))
        values: list[Any] = list(mean + deviation * np.linspace(-3.0, 3.0, rows - 1))
        return pa.array([None, *values], pa.float64())
    vocabulary = list(column.vocabulary or [])
    if column.dtype == "int64":
        unseen = max([int(v) for v in vocabulary] + [0]) + 1
        cycle: list[Any] = [None, unseen, *[int(v) for v in vocabulary]]
        return pa.array([cycle[i % len(cycle)] for i in range(rows)], pa.int64())
    cycle = [None, "\x00unseen", *[str(v) for v in vocabulary]]
    return pa.array([cycle[i % len(cycle)] for i in range(rows)], pa.string())


def write_light_core(run: runs.Run, model: Any, schema: FeatureSchema) -> dict[str, Any]:
    """Converts, checks and (when the check passes) writes `core.onnx`; returns the check.

    The check is recorded in manifest.json (`checks.light`) whether it passed or not; a
    conversion that raises is recorded as failed, with its error.
    """
    import onnxruntime

    from mlcli.inference.predictor import Predictor

    started = time.monotonic()
    check: dict[str, Any]
    try:
        content = convert_core(model)
        session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
        rows = check_rows(run, schema)
        light = LightPredictor(session, schema)
        check = compare_outputs(
            light.outputs(rows, source="check rows"),
            Predictor(model, schema).outputs(rows, source="check rows"),
            tolerance=LIGHT_TOLERANCE,
        )
        uncalibrated = light.uncalibrated()
        if uncalibrated is not None:  # the core alone, on the same encoding, eagerly
            core = model.get_layer(CORE_MODEL)
            encoded = encode_features(rows, schema, source="check rows")
            before = compare_outputs(
                uncalibrated.outputs(rows, source="check rows"),
                np.asarray(core(encoded, training=False)),
                tolerance=LIGHT_TOLERANCE,
            )
            check["uncalibrated"] = before
            check["passed"] = bool(check["passed"] and before["passed"])
        check["rows"] = rows.num_rows
    except Exception as error:  # a conversion that cannot be done is a failed check
        content = b""
        check = {"passed": False, "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    check["seconds"] = round(time.monotonic() - started, 3)
    check["onnxruntime"] = onnxruntime.__version__
    if check["passed"]:
        import hashlib

        check["sha256"] = hashlib.sha256(content).hexdigest()
    _record(run, check)
    if check["passed"]:
        files.write_bytes(run.file(runs.CORE_ONNX), content)
    return check


def _record(run: runs.Run, check: dict[str, Any]) -> None:
    manifest = runs.read_manifest(run)
    manifest.setdefault("checks", {})[CHECK] = check
    files.write_json(run.file(runs.MANIFEST), manifest)


def convert_in_child(run: runs.Run) -> tuple[dict[str, Any] | None, str]:
    """Runs `write_light_core` in a child process; (the recorded check or None, why not)."""
    package_root = str(Path(__file__).resolve().parents[2])
    environment = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "-1",
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "mlcli.inference.conversion", str(run.path)]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environment,
            timeout=CONVERSION_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"writing core.onnx took over {CONVERSION_TIMEOUT_SECONDS} s"
    check = recorded_check(run)
    if result.returncode != 0 or check is None:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        return None, f"writing core.onnx failed: {lines[-1] if lines else result.returncode}"
    if not check.get("passed"):
        why = check.get("error") or (
            f"max relative difference {check.get('max_relative_difference')} over "
            f"{check.get('tolerance')}"
        )
        return check, f"core.onnx failed its check against the Keras model: {why}"
    return check, ""


def main(argv: list[str]) -> int:
    """`python -m mlcli.inference.conversion RUN`: writes RUN's core.onnx; prints the check."""
    from mlcli.runs.loading import load_model

    run = runs.Run(Path(argv[0]))
    schema = FeatureSchema.load(run.file(runs.SCHEMA))
    check = write_light_core(run, load_model(run.file(runs.MODEL)), schema)
    print(json.dumps(check))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
