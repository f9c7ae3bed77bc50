"""tf2onnx's command line, with converters for two TensorFlow ops that mlcli models use.

`mlcli.exporting.formats` runs this file as a script (`python -I onnx_ops.py --saved-model ...
--signature_def KEY`, the key being `mlcli.exporting.signature.SIGNATURE_KEY`): it registers the
converters below in tf2onnx's own op registry, then hands over to `tf2onnx.convert.main`.
Converting the exported SavedModel (rather than the Keras model) is what lets tf2onnx read the
contents of the lookup tables that categorical columns use.

- `Log1p` (a numeric column's `transform: log`): tf2onnx 1.17 has no converter; it becomes
  `Log(x + 1)`.
- `LookupTableFindV2` from int64 to int64 (`IntegerLookup`, integer categorical columns):
  tf2onnx converts only string<->int64 tables; int64->int64 becomes ONNX-ML `LabelEncoder`.
  Every other table goes to tf2onnx's own converter.

The ONNX inputs are then renamed to the columns' own names (`restore_input_names`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from tf2onnx import constants, utils
from tf2onnx.custom_opsets.onnx_ml import LookupTableFind
from tf2onnx.handler import tf_op


@tf_op("Log1p")
class Log1p:
    """log(1 + x) as ONNX `Log` of `Add`."""

    @classmethod
    def version_1(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        """Rewrites the node in place."""
        dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
        one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
        plus = ctx.make_node(
            "Add", [node.input[0], one.output[0]], name=utils.make_name(f"{node.name}_add")
        )
        ctx.replace_inputs(node, [plus.output[0]])
        node.type = "Log"


@tf_op("LookupTableFindV2")
class IntegerLookupTableFind:
    """int64 -> int64 tables as ONNX-ML `LabelEncoder`; tf2onnx's converter for the rest."""

    @classmethod
    def version_8(cls, ctx: Any, node: Any, initialized_tables: Any, **kwargs: Any) -> None:
        """Replaces the lookup node."""
        int64 = TensorProto.INT64
        if not (ctx.get_dtype(node.input[1]) == int64 and ctx.get_dtype(node.output[0]) == int64):
            LookupTableFind.version_8(ctx, node, initialized_tables=initialized_tables, **kwargs)
            return
        table = node.inputs[0]
        while table.type == "Identity":
            table = table.inputs[0]
        keys, values = initialized_tables[table.get_attr_value("shared_name")]
        default = node.inputs[2]
        utils.make_sure(default.is_const(), "default of table lookup %s must be const", node.name)
        shape, name = ctx.get_shape(node.input[1]), node.name
        inputs, outputs = node.input, node.output
        ctx.remove_node(name)
        ctx.make_node(
            "LabelEncoder",
            inputs=[inputs[1]],
            outputs=outputs,
            name=name,
            domain=constants.AI_ONNX_ML_DOMAIN,
            attr={
                "keys_int64s": [int(key) for key in keys],
                "values_int64s": [int(value) for value in values],
                "default_int64": int(default.get_tensor_value()),
            },
            shapes=[shape],
            dtypes=[int64],
        )


def restore_input_names(path: str, columns: dict[str, str]) -> None:
    """Renames the ONNX inputs back to the column names (`columns`: column -> signature name).

    tf2onnx names inputs after the SavedModel function's arguments: the signature names
    (`mlcli.preprocessing.inputs.input_name`), which TensorFlow lower-cases
    (`housingMedianAge` -> `housingmedianage`).
    """
    import onnx

    model = onnx.load(path)
    by_lower = {name.lower(): name for name in columns}
    by_lower.update({signature.lower(): name for name, signature in columns.items()})
    renamed = {}
    for tensor in model.graph.input:
        wanted = tensor.name if tensor.name in columns else by_lower.get(tensor.name.lower())
        if wanted and wanted != tensor.name:
            renamed[tensor.name] = wanted
            tensor.name = wanted
    if not renamed:
        return
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    onnx.save(model, path)


if __name__ == "__main__":
    import json
    import sys

    from tf2onnx.convert import main

    # `--columns FILE` (mlcli's own option): JSON, each column's signature input name
    position = sys.argv.index("--columns")
    with open(sys.argv[position + 1], encoding="utf-8") as stream:
        column_names = json.load(stream)
    del sys.argv[position : position + 2]
    main()
    restore_input_names(sys.argv[sys.argv.index("--output") + 1], column_names)
