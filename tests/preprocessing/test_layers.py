"""The Keras preprocessing model: its inputs, outputs and layer names, and encoding in chunks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mlcli.features.schema import ColumnSchema, FeatureSchema, TargetSchema
from mlcli.preprocessing.inputs import model_inputs

SCHEMA = FeatureSchema(
    columns=[
        ColumnSchema(
            name="capital-gain",
            type="numeric",
            dtype="float32",
            mean=2.0,
            variance=4.0,
            has_missing=True,
            transform="quantile",
            quantiles=[0.0, 1.0, 2.0, 4.0],
        ),
        ColumnSchema(name="work class", type="categorical", dtype="string", vocabulary=["a", "b"]),
        ColumnSchema(name="grade", type="categorical", dtype="int64", vocabulary=[3, 1]),
        ColumnSchema(
            name="notes", type="text", dtype="string", vocabulary=["good"], sequence_length=3
        ),
    ],
    target=TargetSchema(column="label", task="binary", classes=["no", "yes"]),
)


def test_layers_are_named_from_their_columns():
    from mlcli.preprocessing.layers import build_preprocessor

    model = build_preprocessor(SCHEMA)
    inputs = {tensor.name: tensor.dtype for tensor in model.inputs}
    assert inputs == {
        "capital-gain": "float32",
        "work class": "string",
        "grade": "int64",
        "notes": "string",
    }
    names = {layer.name for layer in model.layers}
    expected = {
        "quantile_capital_gain",
        "normalize_capital_gain",
        "lookup_work_class",
        "lookup_grade",
        "vectorize_notes",
    }
    assert expected <= names, "saved models hold these names: they must not change"
    assert set(model.output.keys()) == {
        "numeric",
        "categorical__work class",
        "categorical__grade",
        "text__notes",
    }


def test_encoding_in_chunks_equals_one_pass_and_missing_values_are_handled():
    from mlcli.preprocessing.layers import build_preprocessor, encode

    table = pa.table(
        {
            "capital-gain": pa.array([0.5, None, 3.0, 9.0, 1.0]),
            "work class": pa.array(["b", None, "a", "z", "a"]),
            "grade": pa.array([1, 3, None, 7, 3]),
            "notes": pa.array(["Good, good!", None, "bad", "", "good day"]),
        }
    )
    model = build_preprocessor(SCHEMA)
    arrays = model_inputs(table, SCHEMA, source="t")
    whole = encode(model, arrays, SCHEMA)
    chunked = encode(model, arrays, SCHEMA, chunk_rows=2)
    for name, values in whole.items():
        np.testing.assert_array_equal(values, chunked[name], err_msg=name)
    # index 0 is the one out-of-vocabulary index: missing and unseen values both land there
    assert whole["categorical__work class"][:, 0].tolist() == [2, 0, 1, 0, 1]
    assert whole["categorical__grade"][:, 0].tolist() == [2, 1, 0, 0, 1]
    assert whole["numeric"].shape == (5, 2)
    assert whole["numeric"][:, 1].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]  # the missing indicator
    assert whole["text__notes"][0].tolist() == [2, 2, 0]  # lower-cased, punctuation stripped
