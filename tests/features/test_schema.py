"""The feature schema as `schema.json` holds it: a round trip, and the files it refuses."""

from __future__ import annotations

import json

import pytest

from mlcli.errors import RunError
from mlcli.features.schema import SCHEMA_VERSION, ColumnSchema, FeatureSchema, TargetSchema


def _schema() -> FeatureSchema:
    return FeatureSchema(
        columns=[
            ColumnSchema(name="age", type="numeric", dtype="float32", mean=40.0, variance=9.0),
            ColumnSchema(
                name="grade",
                type="categorical",
                dtype="int64",
                vocabulary=[3, 1],
                encoding="embedding",
                embedding_dim=4,
            ),
        ],
        target=TargetSchema(column="label", task="binary", classes=["low", "high"]),
        excluded={"id": "excluded in the config"},
    )


def test_a_schema_survives_schema_json(tmp_path):
    schema = _schema()
    schema.save(tmp_path / "schema.json")
    loaded = FeatureSchema.load(tmp_path / "schema.json")
    assert loaded == schema
    assert loaded.input_names == ["age", "grade"]
    assert json.loads((tmp_path / "schema.json").read_text())["version"] == SCHEMA_VERSION
    assert FeatureSchema.from_dict(schema.to_dict()) == schema


def test_the_positive_class_is_the_second_of_a_binary_target():
    assert _schema().target.positive_class == "high"
    assert TargetSchema(column="y", task="multiclass", classes=[1, 2, 3]).positive_class is None


def test_a_missing_broken_or_newer_schema_is_a_run_error(tmp_path):
    path = tmp_path / "schema.json"
    with pytest.raises(RunError, match="missing; the run is incomplete"):
        FeatureSchema.load(path)
    path.write_text('{"columns": []}')
    with pytest.raises(RunError, match="not a valid mlcli schema"):
        FeatureSchema.load(path)
    document = _schema().to_dict()
    path.write_text(json.dumps({**document, "version": SCHEMA_VERSION + 1}))
    with pytest.raises(RunError, match=f"schema version {SCHEMA_VERSION + 1}"):
        FeatureSchema.load(path)
