"""Runs an exported model in the runtime its format is for, in a fresh process.

`mlcli.exporting.check` executes this file as a script with `python -I` (so neither mlcli nor the
current folder is importable by accident):

```
python -I export_runtimes.py FORMAT MODEL_PATH REQUEST.json RESPONSE.json [--import-path DIR]
```

It imports only that runtime, never mlcli: TensorFlow for a SavedModel, Keras for a `.keras`
file, TensorFlow's `tf.lite.Interpreter` for `.tflite`, onnxruntime for `.onnx`. The one
exception is a `.keras` model built with mlcli's own registered layers: Keras cannot rebuild those
without their classes, so `--import-path` makes `mlcli.layers` (and only it) importable.

REQUEST holds `{"columns": {name: {"dtype": "float32|int64|string", "values": [...]}}}`;
RESPONSE receives `{"runtime": "...", "outputs": {name: nested lists}}`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

SIGNATURE_KEY = "serving_default"


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


def run_saved_model(path: str, columns: dict[str, np.ndarray]) -> tuple[str, dict[str, Any]]:
    """The SavedModel's `serving_default` signature, loaded with `tf.saved_model.load`."""
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures[SIGNATURE_KEY]
    _, specs = signature.structured_input_signature
    # The SignatureDef keeps the column names; the loaded Python function takes them sanitised
    by_keyword = {python_keyword(name): name for name in columns}
    feed = {key: tf.constant(columns[by_keyword[key]], spec.dtype) for key, spec in specs.items()}
    outputs = signature(**feed)
    return f"tensorflow {tf.__version__} tf.saved_model.load", {
        name: tensor.numpy() for name, tensor in outputs.items()
    }


def run_keras(path: str, columns: dict[str, np.ndarray]) -> tuple[str, dict[str, Any]]:
    """The `.keras` file, loaded with `keras.saving.load_model(..., safe_mode=True)`."""
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    feed = {name: tf.constant(values.reshape(-1, 1)) for name, values in columns.items()}
    output = keras.ops.convert_to_numpy(model(feed, training=False))
    return f"keras {keras.__version__} load_model(safe_mode=True)", {"output": output}


def run_tflite(path: str, columns: dict[str, np.ndarray]) -> tuple[str, dict[str, Any]]:
    """The `.tflite` file's signature, run by TensorFlow's `tf.lite.Interpreter`."""
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_path=path).get_signature_runner(SIGNATURE_KEY)
    return f"tensorflow {tf.__version__} tf.lite.Interpreter", dict(runner(**columns))


def run_onnx(path: str, columns: dict[str, np.ndarray]) -> tuple[str, dict[str, Any]]:
    """The `.onnx` file, run by onnxruntime on CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    feed = {tensor.name: columns[tensor.name] for tensor in session.get_inputs()}
    return f"onnxruntime {onnxruntime.__version__}", dict(
        zip(names, session.run(names, feed), strict=True)
    )


RUNNERS = {
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


def main(argv: list[str]) -> None:
    """Runs FORMAT's runtime on REQUEST and writes RESPONSE."""
    export_format, path, request_path, response_path, *rest = argv
    if rest[:1] == ["--import-path"]:
        sys.path.insert(0, rest[1])
        import mlcli.layers  # noqa: F401  (the model uses mlcli's registered Keras layers)
    with open(request_path, encoding="utf-8") as stream:
        columns = _columns(json.load(stream))
    runtime, outputs = RUNNERS[export_format](path, columns)
    if rest[:1] == ["--import-path"]:
        runtime += " with mlcli.layers imported"
    response = {"runtime": runtime, "outputs": {k: _plain(v) for k, v in outputs.items()}}
    with open(response_path, "w", encoding="utf-8") as stream:
        json.dump(response, stream)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main(sys.argv[1:])
