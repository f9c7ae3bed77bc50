"""Writing a trained model in each export format.

Every format but `keras` starts from one SavedModel whose `serving_default` signature is the
contract that TF Serving clients, `mlcli serve`, TFLite and ONNX users all see: it is defined
in `mlcli.exporting.signature`.

The SavedModel is written with Keras's `ExportArchive`, which tracks every variable of the model:
a SavedModel written with `tf.saved_model.save` around the Keras model converts to a TFLite file
whose embedding tables are left uninitialised.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlcli._tensorflow import _stderr_silenced
from mlcli.errors import RunError, missing_extra
from mlcli.exporting.signature import BINARY_THRESHOLD, SIGNATURE_KEY, ServingSignature
from mlcli.features.schema import ColumnSchema, FeatureSchema
from mlcli.runs import directory as runs

FORMATS = ("saved_model", "keras", "tflite", "onnx")
ONNX_OPSET = 17
FILE_NAMES = {"keras": "model.keras", "tflite": "model.tflite", "onnx": "model.onnx"}
CONVERSION_TIMEOUT_SECONDS = 900


def write_saved_model(
    model: Any,
    schema: FeatureSchema,
    directory: Path,
    *,
    threshold: float = BINARY_THRESHOLD,
    verbose: bool = False,
) -> None:
    """The SavedModel with the `serving_default` signature over raw columns; a binary model's
    `label` is positive at probability >= `threshold`."""
    import keras
    from absl import logging as absl_logging

    signature = ServingSignature.from_schema(schema, threshold=threshold)
    signature.check_keywords()
    serve, specs = signature.serving_function(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    # absl warns for every column name that is not a Python identifier (`exporting.signature`)
    verbosity = absl_logging.get_verbosity()
    if not verbose:
        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=[specs])
        archive.write_out(str(directory), verbose=False)
    finally:
        absl_logging.set_verbosity(verbosity)


def write_keras(run: runs.Run, path: Path) -> None:
    """The run's own `model.keras`, copied byte for byte."""
    shutil.copy2(run.file(runs.MODEL), path)


def _unsupported(schema: FeatureSchema, kinds: dict[str, str]) -> list[str]:
    found = []
    for column in schema.columns:
        kind = _kind(column)
        if kind in kinds:
            found.append(f"{column.name!r} ({kind})")
    return found


def _kind(column: ColumnSchema) -> str:
    if column.type == "text":
        return "text"
    if column.type in ("categorical", "binary") and column.dtype == "int64":
        return "integer categorical"
    return column.type


# What each converted format cannot reproduce and verify here, and why.
UNSUPPORTED = {
    "tflite": {
        "text": "TextVectorization",
        "integer categorical": "IntegerLookup",
    },
    "onnx": {"text": "TextVectorization"},
}
_WHY = {
    "tflite": (
        "need TensorFlow select (Flex) ops in TFLite, which the tf.lite.Interpreter of the "
        "tensorflow package cannot run, so the file could not be verified"
    ),
    "onnx": (
        "go through tf2onnx's string ops, which onnxruntime does not reproduce "
        "(empty texts fail, token ids differ)"
    ),
}


def check_supported(export_format: str, schema: FeatureSchema) -> None:
    """Raises `RunError` before any work when the format cannot hold this model's columns."""
    kinds = UNSUPPORTED.get(export_format, {})
    columns = _unsupported(schema, kinds)
    if columns:
        raise RunError(
            f"--format {export_format}: column(s) {', '.join(columns)} "
            f"{_WHY[export_format]}; export saved_model or keras instead, or exclude the "
            "column(s) in the config's features.exclude and retrain"
        )


def write_tflite(saved_model: Path, path: Path, *, verbose: bool) -> None:
    """A `.tflite` file converted from the SavedModel (builtin ops, select TF ops if needed)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=[SIGNATURE_KEY]
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    try:
        with _quiet(verbose):
            content = converter.convert()
    except Exception as error:  # the converter raises its own ConverterError or others
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"--format tflite: the TFLite converter failed: {first}") from error
    path.write_bytes(content)


def _quiet(verbose: bool) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext() if verbose else _stderr_silenced()


def require_onnx() -> None:
    """Raises `missing_extra` (exit 2) unless tf2onnx and onnxruntime are installed."""
    missing = [name for name in ("tf2onnx", "onnxruntime") if not importlib.util.find_spec(name)]
    if missing:
        raise missing_extra("--format onnx", " and ".join(missing), "onnx")


def run_child(command: list[str], *, timeout: int, timeout_message: str) -> Any:
    """Runs a conversion or check subprocess (TensorFlow's logs off, CPU only), its output kept.

    A time-out is a `RunError` with `timeout_message`.
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    try:
        return subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RunError(timeout_message) from error


def write_onnx(saved_model: Path, path: Path, schema: FeatureSchema) -> None:
    """An `.onnx` file converted from the SavedModel by tf2onnx, in a subprocess."""
    require_onnx()
    script = Path(__file__).with_name("onnx_ops.py")
    columns = saved_model.parent / "columns.json"
    columns.write_text(json.dumps(ServingSignature.from_schema(schema).names), encoding="utf-8")
    command = [
        sys.executable,
        "-I",
        str(script),
        "--columns",
        str(columns),
        "--saved-model",
        str(saved_model),
        "--signature_def",
        SIGNATURE_KEY,
        "--opset",
        str(ONNX_OPSET),
        "--output",
        str(path),
    ]
    result = run_child(
        command,
        timeout=CONVERSION_TIMEOUT_SECONDS,
        timeout_message=f"--format onnx: tf2onnx did not finish in {CONVERSION_TIMEOUT_SECONDS} s",
    )
    log = result.stdout + result.stderr
    unsupported = re.search(r"Unsupported ops: Counter\((\{.*?\})\)", log)
    if unsupported:
        raise RunError(f"--format onnx: tf2onnx cannot convert the TensorFlow ops {unsupported[1]}")
    if result.returncode != 0 or not path.is_file():
        raise RunError(f"--format onnx: tf2onnx failed: {last_line(log)}")


def last_line(text: str) -> str:
    """The last non-empty line of a subprocess's output (its error, usually)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
