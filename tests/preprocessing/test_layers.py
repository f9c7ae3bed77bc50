"""The Keras preprocessing model: its inputs, outputs and layer names (any column name), the
composed model's save and load, and encoding in chunks."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from e2e.strategies import ODD_NAMES

from mlcli.features.schema import ColumnSchema, FeatureSchema, TargetSchema
from mlcli.preprocessing.inputs import input_name, model_inputs

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


def test_inputs_are_keyed_by_column_and_layers_named_by_input_name():
    from mlcli.preprocessing.layers import build_preprocessor

    model = build_preprocessor(SCHEMA)
    assert {key: tensor.dtype for key, tensor in model.input.items()} == {
        "capital-gain": "float32",
        "work class": "string",
        "grade": "int64",
        "notes": "string",
    }
    assert {tensor.name for tensor in model.inputs} == {
        input_name(c) for c in ("capital-gain", "work class", "grade", "notes")
    }
    names = {layer.name for layer in model.layers}
    expected = {
        "quantile_" + input_name("capital-gain"),
        "lookup_" + input_name("work class"),
        "lookup_grade",
        "vectorize_notes",
    }
    assert expected <= names
    assert set(model.output.keys()) == {
        "numeric",
        "categorical__work class",
        "categorical__grade",
        "text__notes",
    }


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e30, -1e38])
def test_numeric_columns_of_any_magnitude_are_standardised(scale):
    """A variance beyond float32 (1e30's is 1e60) made `Normalization` fail: exit 1."""
    from mlcli.preprocessing.layers import build_preprocessor, encode

    values = np.array([[-1.0], [0.0], [1.0], [np.nan]], np.float32) * np.float32(scale)
    column = ColumnSchema(
        name="x", type="numeric", dtype="float32", mean=0.0, variance=scale**2 * 2 / 3
    )
    schema = FeatureSchema(columns=[column], target=SCHEMA.target)
    encoded = encode(build_preprocessor(schema), {"x": values}, schema)["numeric"]
    expected = np.array([-1.0, 0.0, 1.0, 0.0]) * math.copysign(1, scale) / math.sqrt(2 / 3)
    np.testing.assert_allclose(encoded[:, 0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transform", ["none", "quantile"])
def test_any_column_names_build_save_and_load(tmp_path, transform):
    """Columns named as CSV headers allow (`/`, `€`, emoji, 300 characters, near-twins) make a
    composed model that Keras saves and loads, and that takes the columns' own names."""
    import warnings

    import keras

    from mlcli.config.training import MlpConfig
    from mlcli.models.core import build_core, compose
    from mlcli.preprocessing.layers import build_preprocessor, encode, to_tensors

    numeric = [*ODD_NAMES[:3], "a.b", "", "2nd", "_private", "n" * 300, "n" * 299 + "m"]
    categorical = ["a b", "a_b", "a-b", "🎉", "🎊"]
    text = ["Größe", "größe", 'say "hi"']
    columns = [
        ColumnSchema(
            name=name,
            type="numeric",
            dtype="float32",
            mean=0.0,
            variance=1.0,
            transform=transform,
            quantiles=[-1.0, 0.0, 1.0] if transform == "quantile" else None,
        )
        for name in numeric
    ]
    columns += [
        ColumnSchema(name=name, type="categorical", dtype="string", vocabulary=["u", "v"])
        for name in categorical
    ]
    columns += [
        ColumnSchema(
            name=n,
            type="text",
            dtype="string",
            vocabulary=["w"],
            sequence_length=2,
            embedding_dim=2,
        )
        for n in text
    ]
    schema = FeatureSchema(
        columns=columns, target=TargetSchema(column="y", task="binary", classes=["n", "y"])
    )
    rng = np.random.default_rng(0)
    arrays = {
        c.name: (
            rng.normal(size=(4, 1)).astype(np.float32)
            if c.dtype == "float32"
            else rng.choice(["u", "v", "w x", ""], size=(4, 1)).astype(object)
        )
        for c in columns
    }
    preprocessor = build_preprocessor(schema)
    encoded = encode(preprocessor, arrays, schema)
    shapes = {name: value.shape[1:] for name, value in encoded.items()}
    core = build_core(schema, MlpConfig(hidden_units=[8]), encoded_shapes=shapes)
    model = compose(preprocessor, core, schema)
    expected = keras.ops.convert_to_numpy(model(to_tensors(arrays, schema)))
    path = tmp_path / "model.keras"
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that keys and input names differ
        loaded = keras.saving.load_model(path, safe_mode=True)
    found = keras.ops.convert_to_numpy(loaded(to_tensors(arrays, schema)))
    np.testing.assert_allclose(found, expected, rtol=1e-6)


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
