"""`--set key.path=value` is typed by the schema; dotted keys are walked in one place."""

from __future__ import annotations

import pytest
import yaml

from mlcli.config.loading import load_config
from mlcli.config.overrides import (
    apply_overrides,
    copy_document,
    get_dotted,
    set_dotted,
    walk_schema,
)
from mlcli.config.schema import CategoricalSpec, NumericSpec, SourceSpec
from mlcli.config.training import FTTransformerConfig
from mlcli.errors import ConfigError


def test_set_overrides_are_typed_by_the_schema(write_config):
    path = write_config()
    config = load_config(
        path, overrides=["training.epochs=5", "name=2024", "model.hidden_units=[8, 4]"]
    )
    assert config.training.epochs == 5
    assert config.name == "2024"
    assert config.model.hidden_units == [8, 4]


def test_set_unknown_key_is_rejected_with_suggestion(write_config):
    path = write_config()
    with pytest.raises(ConfigError, match="did you mean `learning_rate`"):
        load_config(path, overrides=["training.learning_rat=0.1"])


@pytest.mark.parametrize("override", ["training.epochs", "=3", " =3"])
def test_an_override_without_key_and_value_is_a_usage_error(override):
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE with a dotted key"):
        apply_overrides({}, [override])


def test_overrides_make_missing_sections_and_leave_the_document_alone():
    document = {"training": {"epochs": 2}, "model": "mlp"}
    result = apply_overrides(
        document, ["training.early_stopping.patience=5", "model.dropout=0.1", "output.dir="]
    )
    assert result == {
        "training": {"epochs": 2, "early_stopping": {"patience": 5}},
        "model": {"dropout": 0.1},
        "output": {"dir": ""},
    }
    assert document == {"training": {"epochs": 2}, "model": "mlp"}


def test_a_string_key_keeps_its_text_and_other_text_that_is_not_yaml_is_kept():
    result = apply_overrides({}, ["target.column=yes", "model.hidden_units=[8,", "seed=0x10"])
    assert result["target"]["column"] == "yes"  # not True
    assert result["model"]["hidden_units"] == "[8,"  # the schema will say what is wrong
    assert result["seed"] == 16


def test_get_and_set_dotted_walk_the_same_paths():
    document: dict = {"model": {"type": "mlp"}}
    set_dotted(document, "model.numeric_embedding.dim", 8)
    set_dotted(document, "seed", 3)
    assert document == {"model": {"type": "mlp", "numeric_embedding": {"dim": 8}}, "seed": 3}
    assert get_dotted(document, "model.numeric_embedding.dim") == 8
    assert get_dotted(document, "model.type") == "mlp"
    assert get_dotted(document, "model.type.name") is None  # through a value, not a section
    assert get_dotted(document, "training.epochs") is None


def test_a_copied_document_shares_nothing_not_even_yaml_anchors():
    document = yaml.safe_load("a: &shared {x: 1}\nb: *shared\n")
    assert document["a"] is document["b"]
    copied = copy_document(document)
    set_dotted(copied, "a.x", 2)
    assert copied == {"a": {"x": 2}, "b": {"x": 1}}
    assert document == {"a": {"x": 1}, "b": {"x": 1}}


def test_walk_schema_follows_unions_tags_and_columns():
    assert walk_schema(["model", "ft_transformer", "heads"])[1] is int
    assert FTTransformerConfig in walk_schema(["model"])[0]
    assert SourceSpec in walk_schema(["data", "train"])[0]
    columns, _ = walk_schema(["features", "age"])
    assert NumericSpec in columns and CategoricalSpec in columns
    assert walk_schema(["data", "csv", "columns", 0])[1] == list[str] | None
    assert walk_schema(["nothing", "here"]) == ([], None)


def test_dotted_items_names_every_leaf_and_keeps_empty_sections():
    from mlcli.config.overrides import dotted_items, get_dotted

    document = {"model": {"hidden_units": [8, 4], "embedding": {}}, "seed": 3, "data": {"csv": {}}}
    flat = dotted_items(document)
    assert flat == {
        "model.hidden_units": [8, 4],
        "model.embedding": {},
        "seed": 3,
        "data.csv": {},
    }
    assert all(get_dotted(document, key) == value for key, value in flat.items())
