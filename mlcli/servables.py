"""What `mlcli serve` serves: a run's model as one compiled TensorFlow function.

Imported only after TensorFlow has been imported quietly. The model is traced once with a
fixed input signature (any number of rows), so batches of every size reuse one graph; the
server calls it once on `Servable.example()` before it accepts connections, in the thread
that runs every later call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcli._tensorflow import import_tensorflow
from mlcli.batching import Columns, ModelCall
from mlcli.features import INT_MISSING
from mlcli.payloads import Signature

tf = import_tensorflow()

# TF Serving numbers model versions; a run directory holds exactly one.
VERSION = "1"


@dataclass
class Servable:
    """A loaded model behind the REST API: its name, signature and compiled call."""

    name: str
    version: str
    signature: Signature
    call: ModelCall
    source: Path

    def example(self) -> dict[str, np.ndarray]:
        """One row with every value missing: what a warm-up call sends."""
        return _missing_row(self.signature)


def compiled_call(model: Any, signature: Signature) -> ModelCall:
    """The model as one traced `tf.function` over numpy columns, returning numpy outputs.

    The function takes one (rows, columns) tensor per dtype and slices the model's named
    (rows, 1) inputs out of them inside the graph: passing a dozen small tensors costs more
    in Python than running the whole model on a few rows.
    """
    groups: dict[str, list[str]] = {}
    for name, dtype in signature.inputs.items():
        groups.setdefault(dtype, []).append(name)
    packing = list(groups.items())
    specs = [tf.TensorSpec(shape=(None, len(names)), dtype=dtype) for dtype, names in packing]

    def unpack_and_call(*packed: Any) -> Any:
        inputs = {}
        for (_, names), tensor in zip(packing, packed, strict=True):
            for index, name in enumerate(names):
                inputs[name] = tensor[:, index : index + 1]
        return model(inputs, training=False)

    concrete = tf.function(unpack_and_call, input_signature=specs).get_concrete_function()

    def call(columns: Columns) -> np.ndarray:
        packed = [
            tf.constant(np.concatenate([columns[name] for name in names], axis=1), dtype=dtype)
            for dtype, names in packing
        ]
        return np.asarray(concrete(*packed))

    return call


def _missing_row(signature: Signature) -> dict[str, np.ndarray]:
    fill = {"float32": np.nan, "int64": INT_MISSING, "string": ""}
    return {
        name: np.array([[fill[dtype]]], dtype=object if dtype == "string" else dtype)
        for name, dtype in signature.inputs.items()
    }


def load_servable(reference: str | Path, *, name: str | None = None) -> Servable:
    """A run (directory or name) ready to serve, named `name` or after the run's config."""
    from mlcli.loading import open_run

    loaded = open_run(reference)
    signature = Signature.from_schema(loaded.schema)
    return Servable(
        name=name or loaded.config.name,
        version=VERSION,
        signature=signature,
        call=compiled_call(loaded.model, signature),
        source=loaded.run.path,
    )
