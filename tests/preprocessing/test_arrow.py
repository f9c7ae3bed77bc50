"""Training's Arrow encoding of the splits equals what the Keras preprocessing layers compute."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mlcli.config.loading import load_config
from mlcli.data.splits import load_splits
from mlcli.errors import DataError
from mlcli.preprocessing.arrow import encodable, encode_features, encode_splits
from mlcli.training.data import prepare_schema

FEATURES = {
    "income": {"type": "numeric", "transform": "log"},
    "grade": "categorical",  # integers
    "review": "categorical",  # many distinct strings
    "exclude": ["id", "tier", "value"],
}


def _schema_and_splits(write_config, **features: object):
    config = load_config(write_config(features={**FEATURES, **features}))
    splits = load_splits(config)
    return prepare_schema(config, splits), splits


def _with_unseen_and_missing(table: pa.Table) -> pa.Table:
    """The table's first rows with unseen categories and missing values in every column."""
    columns = table.to_pydict()
    columns["color"][0] = "purple"  # not in the vocabulary
    columns["grade"][1] = 99
    columns["member"][2] = None
    columns["grade"][3] = None
    columns["age"][4] = None
    columns["income"][5] = None
    columns["income"][6] = -0.5  # log1p of a value above -1
    return pa.table(columns, schema=table.schema)


def test_arrow_encoding_equals_the_preprocessing_layers(write_config):
    from mlcli.preprocessing.inputs import model_inputs
    from mlcli.preprocessing.layers import build_preprocessor, encode

    schema, splits = _schema_and_splits(write_config)
    assert encodable(schema)
    assert {c.type for c in schema.columns} == {"numeric", "categorical", "binary"}
    table = _with_unseen_and_missing(splits.validation)

    arrow = encode_features(table, schema, source="validation")
    layers = encode(build_preprocessor(schema), model_inputs(table, schema, source="v"), schema)

    assert arrow.keys() == layers.keys()
    for name, expected in layers.items():
        assert arrow[name].dtype == expected.dtype, name
        assert arrow[name].shape == expected.shape, name
        if name.startswith("categorical__"):
            np.testing.assert_array_equal(arrow[name], expected, err_msg=name)
        else:
            np.testing.assert_allclose(arrow[name], expected, rtol=1e-6, atol=1e-6)
    assert arrow["categorical__color"][0, 0] == 0  # unseen: the OOV index
    assert arrow["categorical__grade"][1, 0] == 0


def test_robust_transform_arrow_equals_the_layers_relative_to_scale(write_config):
    from mlcli.preprocessing.inputs import model_inputs
    from mlcli.preprocessing.layers import build_preprocessor, encode

    robust = {"type": "numeric", "transform": "robust"}
    schema, splits = _schema_and_splits(write_config, income=robust, age=robust)
    assert encodable(schema)
    table = _with_unseen_and_missing(splits.validation)
    arrow = encode_features(table, schema, source="validation")["numeric"]
    layers = encode(build_preprocessor(schema), model_inputs(table, schema, source="v"), schema)
    expected = layers["numeric"]
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(arrow - expected).max() / scale <= 1e-6
    values = arrow[:, [0, 2]]  # age and income (each followed by its missing indicator)
    assert np.isfinite(values).all()
    # smooth clipping: |x / sqrt(1 + (x/3)^2)| < 3, missing values at the median (0)
    assert np.abs(values).max() < 3.0
    assert values[4, 0] == 0.0 and values[5, 1] == 0.0


def test_robust_scaling_uses_the_quartiles_or_else_the_range():
    from mlcli.preprocessing.arrow import robust_scaling, robust_scores

    quantiles = np.linspace(0.0, 8.0, 129).tolist()  # median 4, quartiles 2 and 6
    assert robust_scaling(quantiles) == pytest.approx((4.0, 0.25))
    tied = [0.0] * 100 + [1.0] * 28 + [10.0]  # quartiles tie at 0: half the range, 5
    assert robust_scaling(tied) == pytest.approx((0.0, 0.2))
    assert robust_scaling([3.0] * 129) == (3.0, 0.0)  # constant: every value scores 0
    scores = robust_scores(np.array([4.0, 6.0, 1e30]), quantiles)
    np.testing.assert_allclose(scores, [0.0, 0.5 / np.sqrt(1 + (0.5 / 3) ** 2), 3.0], rtol=1e-6)


def test_text_and_quantile_columns_are_left_to_the_layers(write_config):
    schema, splits = _schema_and_splits(write_config, review="text")
    assert not encodable(schema)
    assert encode_splits({"train": splits.train}, schema) is None
    schema, _ = _schema_and_splits(write_config, age={"type": "numeric", "transform": "quantile"})
    assert not encodable(schema)


def test_a_missing_column_is_named(write_config):
    schema, splits = _schema_and_splits(write_config)
    with pytest.raises(DataError, match="'color'"):
        encode_features(splits.train.drop(["color"]), schema, source="new.csv")


def test_quantile_points_only_where_a_layer_uses_them(write_config):
    schema, _ = _schema_and_splits(write_config)
    assert all(not c.quantiles for c in schema.columns if c.type == "numeric")
    config = load_config(
        write_config(
            features=FEATURES,
            model={"numeric_embedding": {"type": "piecewise_linear", "bins": 8}},
        )
    )
    schema = prepare_schema(config, load_splits(config))
    assert all(len(c.quantiles) > 8 for c in schema.columns if c.type == "numeric")


@pytest.mark.parametrize("scale", [1.0, 1e20, 1e30, 1e37])
def test_a_deviation_beyond_float32_encodes_as_the_layers_do(scale: float) -> None:
    # a 1e30 column's variance (1e60) is inf in float32: both sides take its root in float64
    from mlcli.config.schema import NumericSpec
    from mlcli.features.build import build_schema
    from mlcli.features.schema import TargetSchema
    from mlcli.preprocessing.inputs import model_inputs
    from mlcli.preprocessing.layers import build_preprocessor, encode

    values = np.random.default_rng(0).standard_normal(64) * scale
    table = pa.table({"x": np.clip(values, -3.4e38, 3.4e38)})
    schema = build_schema(
        table,
        specs={"x": NumericSpec(type="numeric")},
        target=TargetSchema(column="y", task="binary", classes=["0", "1"]),
        excluded={},
        quantiles=False,
    )
    arrow = encode_features(table, schema, source="t")
    layers = encode(build_preprocessor(schema), model_inputs(table, schema, source="t"), schema)
    [name] = arrow
    assert np.isfinite(arrow[name]).all()
    assert np.std(arrow[name]) > 0.5  # standardised, not flattened to zero by an inf deviation
    np.testing.assert_allclose(arrow[name], layers[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 40])
def test_numpy_columns_encode_exactly_as_the_arrow_encoder(write_config, rows: int):
    """`encode_columns` (a server's few rows) equals `encode_features` bit for bit, unseen
    values, missing values, integer categories and the log transform included."""
    from mlcli.preprocessing.arrow import encode_columns
    from mlcli.preprocessing.inputs import model_inputs

    schema, splits = _schema_and_splits(
        write_config, income={"type": "numeric", "transform": "log"}
    )
    table = _with_unseen_and_missing(splits.validation).slice(0, rows)
    columns = model_inputs(table, schema, source="v")  # as a request's payload holds them
    expected = encode_features(table, schema, source="v")
    found = encode_columns(columns, schema)
    assert found is not None and found.keys() == expected.keys()
    for name, array in expected.items():
        assert found[name].dtype == array.dtype and found[name].shape == array.shape, name
        np.testing.assert_array_equal(found[name], array, err_msg=name)


def test_numpy_columns_with_a_non_string_value_are_left_to_arrow(write_config):
    from mlcli.preprocessing.arrow import encode_columns
    from mlcli.preprocessing.inputs import model_inputs

    schema, splits = _schema_and_splits(write_config)
    columns = model_inputs(splits.validation.slice(0, 2), schema, source="v")
    columns["color"] = np.array([[3], ["red"]], dtype=object)
    assert encode_columns(columns, schema) is None
