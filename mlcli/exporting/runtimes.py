"""Runs an exported model in the runtime its format is for, in a fresh process.

`mlcli.exporting.check` executes this file as a script with `python -I` (so neither mlcli nor the
current folder is importable by accident):

```
python -I runtimes.py FORMAT MODEL_PATH REQUEST.json RESPONSE.json --signature KEY
    [--import-path DIR]
```

It imports only that runtime, never mlcli: TensorFlow for a SavedModel, Keras for a `.keras`
file, TensorFlow's `tf.lite.Interpreter` for `.tflite`, onnxruntime for `.onnx`. The one
exception is a `.keras` model built with mlcli's own registered layers: Keras cannot rebuild those
without their classes, so `--import-path` makes `mlcli.layers` (and only it) importable.

REQUEST holds `{"columns": {name: {"dtype": "float32|int64|string", "values": [...]}}}`;
RESPONSE receives `{"runtime": "...", "outputs": {name: nested lists}}`. KEY is the signature
a SavedModel or TFLite file is run through (`mlcli.exporting.signature.SIGNATURE_KEY`: this
script cannot import it, so the check passes it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np


def python_keyword(name: str) -> str:
    """The keyword TensorFlow gives a column in a loaded signature's Python function.

    As `tensorflow/core/function/polymorphism/function_type.py` `sanitize_arg_name`:
    `capital-gain` -> `capital_gain`, `2nd` -> `arg_2nd`; the case is kept.
    """
    swapped = "".join(c if c.isalnum() else "_" for c in name)
    return swapped if swapped[:1].isalpha() else f"arg_{swapped}"


def _columns(request: dict[str, Any]) -> dict[str, np.ndarray]:
    columns = {}
    for name, column in request["columns"].items():
        dtype = object if column["dtype"] == "string" else column["dtype"]
        columns[name] = np.asarray(column["values"], dtype=dtype)
    return columns


def run_saved_model(
    path: str, columns: dict[str, np.ndarray], signature_key: str
) -> tuple[str, dict[str, Any]]:
    """The SavedModel's signature `signature_key`, loaded with `tf.saved_model.load`."""
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures[signature_key]
    _, specs = signature.structured_input_signature
    # The SignatureDef keeps the column names; the loaded Python function takes them sanitised
    by_keyword = {python_keyword(name): name for name in columns}
    feed = {key: tf.constant(columns[by_keyword[key]], spec.dtype) for key, spec in specs.items()}
    outputs = signature(**feed)
    return f"tensorflow {tf.__version__} tf.saved_model.load", {
        name: tensor.numpy() for name, tensor in outputs.items()
    }


def run_keras(
    path: str, columns: dict[str, np.ndarray], signature_key: str
) -> tuple[str, dict[str, Any]]:
    """The `.keras` file, loaded with `keras.saving.load_model(..., safe_mode=True)`.

    A `.keras` file has no signatures: the model itself is called, `signature_key` unused.
    """
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    feed = {name: tf.constant(values.reshape(-1, 1)) for name, values in columns.items()}
    output = keras.ops.convert_to_numpy(model(feed, training=False))
    return f"keras {keras.__version__} load_model(safe_mode=True)", {"output": output}


def run_tflite(
    path: str, columns: dict[str, np.ndarray], signature_key: str
) -> tuple[str, dict[str, Any]]:
    """The `.tflite` file's signature `signature_key`, run by TensorFlow's `tf.lite.Interpreter`."""
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=path).get_signature_runner(signature_key)
    return f"tensorflow {tf.__version__} tf.lite.Interpreter", dict(runner(**columns))


def run_onnx(
    path: str, columns: dict[str, np.ndarray], signature_key: str
) -> tuple[str, dict[str, Any]]:
    """The `.onnx` file (converted from the signature `signature_key`), run by onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    feed = {tensor.name: columns[tensor.name] for tensor in session.get_inputs()}
    return f"onnxruntime {onnxruntime.__version__}", dict(
        zip(names, session.run(names, feed), strict=True)
    )


RUNNERS: dict[str, Callable[[str, dict[str, np.ndarray], str], tuple[str, dict[str, Any]]]] = {
    "saved_model": run_saved_model,
    "keras": run_keras,
    "tflite": run_tflite,
    "onnx": run_onnx,
}


def _plain(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "SU":
        return [
            item.decode("utf-8") if isinstance(item, bytes) else str(item)
            for item in array.reshape(-1)
        ]
    return array.tolist()


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="runtimes.py")
    parser.add_argument("format", choices=sorted(RUNNERS))
    parser.add_argument("model_path")
    parser.add_argument("request")
    parser.add_argument("response")
    parser.add_argument("--signature", required=True, help="the signature key to run")
    parser.add_argument("--import-path", help="a folder from which mlcli.layers imports")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    """Runs FORMAT's runtime on REQUEST and writes RESPONSE."""
    arguments = _arguments(argv)
    if arguments.import_path:
        sys.path.insert(0, arguments.import_path)
        import mlcli.layers  # noqa: F401  (the model uses mlcli's registered Keras layers)
    with open(arguments.request, encoding="utf-8") as stream:
        columns = _columns(json.load(stream))
    runner = RUNNERS[arguments.format]
    runtime, outputs = runner(arguments.model_path, columns, arguments.signature)
    if arguments.import_path:
        runtime += " with mlcli.layers imported"
    response = {"runtime": runtime, "outputs": {k: _plain(v) for k, v in outputs.items()}}
    with open(arguments.response, "w", encoding="utf-8") as stream:
        json.dump(response, stream)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main(sys.argv[1:])
