"""The schema: strict sections, checks that do not rewrite, model families by `type`, and its
JSON Schema."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

import mlcli
from mlcli.cli.app import app
from mlcli.config import schema, training
from mlcli.config.schema import Config, json_schema
from mlcli.config.training import FTTransformerConfig, MlpConfig, ResNetConfig

runner = CliRunner()

BASE: dict[str, Any] = {
    "name": "tiny",
    "data": {"train": "data.csv"},
    "target": {"column": "label"},
}


def test_target_listed_as_feature_is_rejected(write_config):
    path = write_config(features={"label": "categorical"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "'label'" in result.stderr


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ({}, MlpConfig),
        ({"type": "resnet"}, ResNetConfig),
        ({"type": "ft_transformer"}, FTTransformerConfig),
    ],
)
def test_the_model_family_follows_type_and_is_mlp_when_left_out(model, family):
    assert type(Config.model_validate({**BASE, "model": model}).model) is family


def test_sections_reject_unknown_keys_and_check_values_when_set():
    with pytest.raises(ValidationError):
        Config.model_validate({**BASE, "training": {"epocs": 3}})
    config = Config.model_validate(BASE)
    with pytest.raises(ValidationError):
        config.training.epochs = 0


def test_what_the_yaml_says_is_kept_as_written():
    config = Config.model_validate({**BASE, "features": {"age": "numeric", "exclude": ["id"]}})
    assert config.model_dump()["features"] == {
        "exclude": ["id"],
        "max_tokens": 10000,
        "age": "numeric",
    }
    assert config.features.declared() == {"age": schema.NumericSpec(type="numeric")}


def test_a_column_both_typed_and_excluded_is_rejected():
    with pytest.raises(ValidationError, match=r"\['age'\] are both given a type and excluded"):
        Config.model_validate({**BASE, "features": {"age": "numeric", "exclude": ["age"]}})


def test_the_json_schema_is_the_models_with_a_draft_and_a_versioned_title():
    found = json_schema()
    assert found["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert found["title"] == f"mlcli {mlcli.__version__} config"
    models = Config.model_json_schema()
    kept = ("$schema", "title", "properties", "anyOf")
    assert {k: v for k, v in found.items() if k not in kept} == {
        k: v for k, v in models.items() if k not in ("title", "required", "properties")
    }
    assert found["properties"] == {
        "extends": found["properties"]["extends"],
        **models["properties"],
    }
    assert found["anyOf"] == [{"required": ["extends"]}, {"required": models["required"]}]
    assert found["additionalProperties"] is False


def test_every_field_has_a_description():
    sections = [
        value
        for module in (schema, training)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
    ]
    assert len(sections) >= 20
    missing = [
        f"{section.__name__}.{name}"
        for section in sections
        for name, field in section.model_fields.items()
        if not field.description
    ]
    assert missing == []


def test_config_schema_prints_the_json_schema():
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    assert '"title": "mlcli ' in result.stdout and '"$defs"' in result.stdout
