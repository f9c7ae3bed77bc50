"""The serving signature and `export.json`: their one owner.

Every format but `keras` starts from one SavedModel whose `serving_default` signature
(`SIGNATURE_KEY`) is the contract that TF Serving clients, `mlcli serve`, TFLite and ONNX users
all see:

- inputs: one tensor per raw column, named by the column's `input_name` (the column's own name
  when it is a plain identifier, else its letters, digits and `_` and a hash of the name:
  `mlcli.preprocessing.inputs`), shape `[None]` (one value per row),
  dtype `float32` (numeric; NaN = missing), `string` (categorical, binary, text; "" = missing)
  or `int64` (integer categorical; `mlcli.features.schema.INT_MISSING` = missing): the
  missing values are `mlcli.preprocessing.inputs.MISSING_VALUES`;
- outputs, classification: `probabilities` `[None, K]` float32 in the order of the label
  classes, and `label` `[None]` string, the predicted class in the user's own values (binary:
  the second class when its probability is >= the signature's `threshold`: the one the run
  keeps from `mlcli evaluate --choose-threshold --save`, else `BINARY_THRESHOLD`; export.json
  records it as `binary_threshold`);
- outputs, regression: `prediction` `[None]` float32 in the target's units.

`mlcli serve` answers with the same signature for a run (`ServingSignature.from_schema`) as for
an export (`read_export_info`).

The SignatureDef that TF Serving, `saved_model_cli`, TFLite and tf2onnx read names each input
by its `input_name`, which is already a Python identifier: the Python function of a loaded
SavedModel (`tf.saved_model.load(d).signatures["serving_default"]`) takes the same keywords
(`runtimes.python_keyword` leaves them as they are). `ServingSignature.names` maps each column to
its signature input, and `keywords` to the loaded function's keyword; export.json records the
input of each column (`signature_name`). Exports written before that rule named the inputs as
the columns: their keywords are `python_keyword(column)`. Users, `mlcli serve`'s clients
included, keep using the columns' own names.

`export.json` (`EXPORT_INFO`) sits beside every export: the format, the signature, the task and
classes, the columns with their missing values, the check's result and the versions used.
`mlcli/exporting/runtimes.py` and `onnx_ops.py` run under `python -I` without mlcli; they get the
signature's key on their command line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcli import files
from mlcli.errors import RunError
from mlcli.features.schema import FeatureSchema, TargetSchema
from mlcli.inference.labels import BINARY_THRESHOLD, as_text
from mlcli.preprocessing.inputs import MISSING_VALUES, input_names

SIGNATURE_KEY = "serving_default"
EXPORT_INFO = "export.json"
LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
KERAS_OUTPUT = "output"  # the `.keras` model's own (unnamed) output, as export.json names it

__all__ = [
    "BINARY_THRESHOLD",
    "EXPORT_INFO",
    "SIGNATURE_KEY",
    "ServingSignature",
    "features",
    "keras_signature",
    "read_export_info",
    "write_export_info",
]


@dataclass(frozen=True)
class ServingSignature:
    """What a served or exported model takes (raw columns and their dtypes) and returns.

    Example:

    ```python
    signature = ServingSignature.from_schema(loaded.schema)
    signature.describe()  # {"key": "serving_default", "inputs": {...}, "outputs": {...}}
    ```
    """

    inputs: dict[str, str]
    target: TargetSchema
    names: dict[str, str] = field(default_factory=dict)
    threshold: float = BINARY_THRESHOLD  # binary: positive at probability >= threshold

    def __post_init__(self) -> None:
        if not self.names:  # a signature made from columns: their input names by the rule
            self.names.update(input_names(self.inputs))

    @classmethod
    def from_schema(
        cls, schema: FeatureSchema, *, threshold: float = BINARY_THRESHOLD
    ) -> ServingSignature:
        """The signature of a run's model, from its `schema.json` and decision threshold."""
        return cls(
            inputs={c.name: c.dtype for c in schema.columns},
            target=schema.target,
            threshold=threshold,
        )

    def keywords(self) -> dict[str, str]:
        """Column -> the keyword a loaded SavedModel's Python function takes for it."""
        from mlcli.exporting.runtimes import python_keyword

        return {column: python_keyword(self.names[column]) for column in self.inputs}

    @property
    def width(self) -> int:
        """Columns of the model's output: classes of a multiclass model, else 1."""
        return len(self.target.classes) if self.target.task == "multiclass" else 1

    def outputs(self) -> dict[str, dict[str, Any]]:
        """The signature's outputs: name -> dtype and shape (`None` for any number of rows)."""
        if self.target.task == "regression":
            return {PREDICTION: {"dtype": "float32", "shape": [None]}}
        return {
            PROBABILITIES: {"dtype": "float32", "shape": [None, len(self.target.classes)]},
            LABEL: {"dtype": "string", "shape": [None]},
        }

    def describe(self) -> dict[str, Any]:
        """The signature as export.json writes it: key, inputs and outputs."""
        inputs = {
            column: {"dtype": dtype, "shape": [None], "signature_name": self.names[column]}
            for column, dtype in self.inputs.items()
        }
        return {"key": SIGNATURE_KEY, "inputs": inputs, "outputs": self.outputs()}

    def model_outputs(self, outputs: Mapping[str, Any]) -> np.ndarray:
        """The signature's outputs turned back into the Keras model's: (rows, 1 or classes)."""
        if self.target.task == "regression":
            return np.asarray(outputs[PREDICTION]).reshape(-1, 1)
        probabilities = np.asarray(outputs[PROBABILITIES])
        return probabilities[:, 1:] if self.target.task == "binary" else probabilities

    def serving_function(self, model: Any) -> tuple[Callable[[dict[str, Any]], Any], Any]:
        """The signature as a TensorFlow function over `model`, and its input specs.

        The specs are keyed by the signature's input names; the model takes the columns'.
        """
        import tensorflow as tf

        names = dict(self.names)
        specs = {
            names[column]: tf.TensorSpec([None], dtype, name=names[column])
            for column, dtype in self.inputs.items()
        }
        task, threshold = self.target.task, self.threshold
        classes = tf.constant(as_text(self.target.classes) or [""])

        def serve(inputs: dict[str, Any]) -> dict[str, Any]:
            columns = {column: tf.reshape(inputs[name], [-1, 1]) for column, name in names.items()}
            outputs = model(columns, training=False)
            if task == "regression":
                return {PREDICTION: tf.reshape(outputs, [-1])}
            if task == "binary":
                positive = tf.reshape(outputs, [-1])
                probabilities = tf.stack([1.0 - positive, positive], axis=1)
                index = tf.cast(positive >= threshold, tf.int64)
            else:
                probabilities = outputs
                index = tf.argmax(outputs, axis=1)
            return {PROBABILITIES: probabilities, LABEL: tf.gather(classes, index)}

        return serve, specs

    def check_keywords(self) -> None:
        """Raises `RunError` when two columns become one keyword of the loaded signature.

        Input names made by `input_name` never do; an export.json edited by hand might.
        """
        seen: dict[str, str] = {}
        for column, keyword in self.keywords().items():
            other = seen.setdefault(keyword, column)
            if other != column:
                raise RunError(
                    f"--format saved_model: columns {other!r} and {column!r} both become the "
                    f"signature keyword {keyword!r} in TensorFlow; rename one "
                    "(data.csv.columns) and retrain"
                )


def keras_signature(schema: FeatureSchema) -> dict[str, Any]:
    """What a `.keras` export takes and returns, as export.json describes it."""
    inputs = {c.name: {"dtype": c.dtype, "shape": [None, 1]} for c in schema.columns}
    width = ServingSignature.from_schema(schema).width
    return {"inputs": inputs, KERAS_OUTPUT: {"dtype": "float32", "shape": [None, width]}}


def _missing_in_json(dtype: str) -> Any:
    value = MISSING_VALUES[dtype]
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def features(schema: FeatureSchema) -> list[dict[str, Any]]:
    """export.json's columns: name, feature type, dtype, the value that marks it missing and the
    signature input that takes it (`signature_name`)."""
    names = input_names(schema.input_names)
    return [
        {
            "name": c.name,
            "type": c.type,
            "dtype": c.dtype,
            "missing": _missing_in_json(c.dtype),
            "signature_name": names[c.name],
        }
        for c in schema.columns
    ]


def write_export_info(folder: Path, info: Mapping[str, Any]) -> Path:
    """Writes `info` as `folder/export.json` (atomically); returns its path."""
    path = folder / EXPORT_INFO
    files.write_json(path, dict(info))
    return path


def read_export_info(folder: Path) -> tuple[ServingSignature, dict[str, Any]]:
    """The signature and the rest of `export.json` beside an export."""
    path = folder / EXPORT_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        target = TargetSchema(
            column=str(info.get("target", "")), task=info["task"], classes=info["label_classes"]
        )
        inputs = {feature["name"]: feature["dtype"] for feature in info["features"]}
        # exports written before `input_name` named each input as its column
        names = {f["name"]: str(f.get("signature_name", f["name"])) for f in info["features"]}
        saved = info.get("binary_threshold")
        threshold = BINARY_THRESHOLD if saved is None else float(saved)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"binary_threshold {saved!r} is not a probability")
    except FileNotFoundError:
        raise RunError(
            f"{path}: missing; mlcli serves the SavedModels that `mlcli export` writes"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"{path}: not an mlcli export description ({error!r})") from None
    signature = ServingSignature(inputs=inputs, target=target, names=names, threshold=threshold)
    return signature, info
