"""The serving signature and export.json: the outputs per task, the model's outputs read back
from them, the columns' missing values, the TensorFlow function, and export.json's round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e.strategies import ODD_NAMES

from mlcli.errors import RunError
from mlcli.exporting.signature import (
    EXPORT_INFO,
    SIGNATURE_KEY,
    ServingSignature,
    features,
    keras_signature,
    read_export_info,
    write_export_info,
)
from mlcli.features.schema import INT_MISSING, ColumnSchema, FeatureSchema, TargetSchema
from mlcli.preprocessing.inputs import input_name

COLUMNS = [
    ColumnSchema(name="age", type="numeric", dtype="float32"),
    ColumnSchema(name="grade", type="categorical", dtype="int64"),
    ColumnSchema(name="color", type="categorical", dtype="string"),
]


def _schema(task: str, classes: list | None = None) -> FeatureSchema:
    target = TargetSchema(column="y", task=task, classes=classes or [])
    return FeatureSchema(columns=COLUMNS, target=target)


def test_the_outputs_of_each_task():
    assert SIGNATURE_KEY == "serving_default"
    binary = ServingSignature.from_schema(_schema("binary", ["no", "yes"])).describe()
    assert binary["key"] == "serving_default"
    assert binary["inputs"] == {
        "age": {"dtype": "float32", "shape": [None], "signature_name": "age"},
        "grade": {"dtype": "int64", "shape": [None], "signature_name": "grade"},
        "color": {"dtype": "string", "shape": [None], "signature_name": "color"},
    }
    assert binary["outputs"] == {
        "probabilities": {"dtype": "float32", "shape": [None, 2]},
        "label": {"dtype": "string", "shape": [None]},
    }
    multiclass = ServingSignature.from_schema(_schema("multiclass", ["a", "b", "c"]))
    assert multiclass.width == 3
    assert multiclass.outputs()["probabilities"]["shape"] == [None, 3]
    regression = ServingSignature.from_schema(_schema("regression"))
    assert regression.outputs() == {"prediction": {"dtype": "float32", "shape": [None]}}
    assert regression.width == 1


def test_the_models_outputs_are_read_back_from_the_signatures():
    binary = ServingSignature.from_schema(_schema("binary", ["no", "yes"]))
    probabilities = np.array([[0.8, 0.2], [0.1, 0.9]], np.float32)
    found = binary.model_outputs({"probabilities": probabilities, "label": ["no", "yes"]})
    np.testing.assert_array_equal(found, probabilities[:, 1:])
    multiclass = ServingSignature.from_schema(_schema("multiclass", ["a", "b", "c"]))
    three = np.array([[0.2, 0.3, 0.5]], np.float32)
    np.testing.assert_array_equal(multiclass.model_outputs({"probabilities": three}), three)
    regression = ServingSignature.from_schema(_schema("regression"))
    found = regression.model_outputs({"prediction": np.array([1.5, 2.5], np.float32)})
    np.testing.assert_array_equal(found, [[1.5], [2.5]])


def test_the_keras_export_and_the_missing_value_of_each_column():
    described = keras_signature(_schema("multiclass", ["a", "b", "c"]))
    assert described["inputs"]["grade"] == {"dtype": "int64", "shape": [None, 1]}
    assert described["output"] == {"dtype": "float32", "shape": [None, 3]}
    missing = {f["name"]: f["missing"] for f in features(_schema("regression"))}
    assert missing == {"age": "NaN", "grade": INT_MISSING, "color": ""}
    json.dumps(features(_schema("regression")), allow_nan=False)  # plain JSON, no NaN literal


def test_the_serving_function_labels_a_tie_positive():
    import tensorflow as tf

    signature = ServingSignature.from_schema(_schema("binary", ["no", "yes"]))

    def model(inputs, training=False):  # the positive probability is the `age` column
        return inputs["age"]

    serve, specs = signature.serving_function(model)
    assert set(specs) == {"age", "grade", "color"}
    outputs = serve(
        {
            "age": tf.constant([0.2, 0.5, 0.7]),
            "grade": tf.constant([1, 2, 3], tf.int64),
            "color": tf.constant(["a", "b", "c"]),
        }
    )
    assert [v.decode() for v in outputs["label"].numpy()] == ["no", "yes", "yes"]
    np.testing.assert_allclose(outputs["probabilities"].numpy()[:, 1], [0.2, 0.5, 0.7])


def test_any_column_names_take_distinct_signature_inputs_that_are_keywords():
    import tensorflow as tf

    signature = ServingSignature(
        inputs={name: "float32" for name in ODD_NAMES},
        target=TargetSchema(column="y", task="regression"),
    )
    signature.check_keywords()
    assert signature.names == {name: input_name(name) for name in ODD_NAMES}
    assert signature.keywords() == signature.names  # a loaded signature renames nothing
    described = signature.describe()["inputs"]
    assert list(described) == ODD_NAMES  # users see the columns' own names
    assert {v["signature_name"] for v in described.values()} == set(signature.names.values())

    def model(inputs, training=False):  # the prediction is the sum of the columns, 1, 2, ...
        return sum(inputs[name] * (i + 1) for i, name in enumerate(ODD_NAMES))

    serve, specs = signature.serving_function(model)
    assert set(specs) == set(signature.names.values())
    found = serve({signature.names[name]: tf.constant([1.0, 2.0]) for name in ODD_NAMES})
    total = sum(range(1, len(ODD_NAMES) + 1))
    np.testing.assert_allclose(found["prediction"].numpy(), [total, 2 * total])


def test_an_export_json_without_signature_names_is_read_as_before(tmp_path):
    """Exports written before `input_name` named each signature input as its column."""
    features_ = [{"name": "capital-gain", "dtype": "float32"}, {"name": "2nd", "dtype": "string"}]
    info = {"task": "regression", "label_classes": [], "features": features_}
    write_export_info(tmp_path, info)
    signature, _ = read_export_info(tmp_path)
    assert signature.names == {"capital-gain": "capital-gain", "2nd": "2nd"}
    assert signature.keywords() == {"capital-gain": "capital_gain", "2nd": "arg_2nd"}


def test_two_columns_with_one_python_keyword_are_refused():
    signature = ServingSignature(
        inputs={"capital-gain": "float32", "capital_gain": "float32"},
        target=TargetSchema(column="y", task="regression"),
        names={"capital-gain": "capital-gain", "capital_gain": "capital_gain"},
    )
    with pytest.raises(RunError, match="'capital-gain' and 'capital_gain'"):
        signature.check_keywords()


def test_export_json_round_trip(tmp_path):
    schema = _schema("binary", ["no", "yes"])
    info = {
        "task": "binary",
        "label_classes": ["no", "yes"],
        "features": features(schema),
        "model_name": "m",
    }
    path = write_export_info(tmp_path, info)
    assert path == tmp_path / EXPORT_INFO == tmp_path / "export.json"
    signature, read = read_export_info(tmp_path)
    assert read == info
    assert signature.inputs == ServingSignature.from_schema(schema).inputs
    assert signature.names == ServingSignature.from_schema(schema).names
    assert (signature.target.task, signature.target.classes) == ("binary", ["no", "yes"])


def test_a_missing_or_foreign_export_json_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match=r"export\.json: missing"):
        read_export_info(tmp_path)
    (tmp_path / "export.json").write_text('{"format": "keras"}')
    with pytest.raises(RunError, match="not an mlcli export description"):
        read_export_info(tmp_path)
