"""A config problem is one line naming the dotted key, with a "did you mean" where one is close;
the CLI exits 2 with it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.messages import (
    allowed_keys,
    describe_validation_error,
    did_you_mean,
    format_loc,
)
from mlcli.config.schema import Config

runner = CliRunner()

BASE: dict[str, Any] = {
    "name": "tiny",
    "data": {"train": "data.csv"},
    "target": {"column": "label"},
}


def _message(**sections: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Config.model_validate({**BASE, **sections})
    return describe_validation_error(caught.value, "config.yaml")


def test_unknown_key_is_exit_2_with_dotted_path_and_suggestion(write_config):
    path = write_config(training={"epocs": 3})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "training.epocs" in result.stderr
    assert "did you mean `epochs`" in result.stderr
    assert "Traceback" not in result.output


def test_wrong_type_is_exit_2_with_dotted_path(write_config):
    path = write_config(training={"epochs": "many"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "training.epochs" in result.stderr
    assert "'many'" in result.stderr


def test_misspelt_feature_type_suggests(write_config):
    path = write_config(features={"age": "numerc"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "features.age" in result.stderr and "did you mean 'numeric'" in result.stderr


def test_a_model_key_is_named_without_the_family_tag():
    message = _message(model={"dropout": 1.5})
    assert message.startswith("config.yaml: config key `model.dropout`: ")
    assert "mlp" not in message


def test_a_key_of_another_model_family_lists_this_family_keys():
    message = _message(model={"type": "resnet", "hidden_units": [8]})
    assert "config key `model.hidden_units` is not allowed" in message
    assert "valid keys here: activation, blocks, ensemble, hidden_dropout" in message


def test_a_misspelt_model_family_is_suggested():
    message = _message(model={"type": "resnt"})
    assert "config key `model.type`: expected one of mlp, resnet, ft_transformer" in message
    assert "found 'resnt' (did you mean 'resnet'?)" in message


def test_a_key_inside_a_feature_spec_is_named_by_its_column():
    message = _message(features={"age": {"type": "numeric", "transfrom": "log"}})
    assert "config key `features.age.transfrom` is not allowed (did you mean `transform`?)" in (
        message
    )


def test_a_missing_key_is_named():
    assert _message(target={}) == "config.yaml: config key `target.column` is required but missing"


def test_a_failed_check_gives_its_own_words():
    message = _message(features={"label": "categorical"})
    assert message == (
        "config.yaml: config: the target column 'label' is also listed under `features`; "
        "remove it there"
    )


def test_past_five_problems_the_rest_are_counted():
    training = {f"unknown_{index}": 1 for index in range(7)}
    message = _message(training=training)
    assert message.count("is not allowed") == 5
    assert message.endswith("(+2 more)")


def test_did_you_mean_needs_a_close_name():
    assert did_you_mean("epocs", ["batch_size", "epochs"]) == "epochs"
    assert did_you_mean("colour", ["epochs", "seed"]) is None


def test_format_loc_leaves_out_union_members_and_indexes_lists():
    assert format_loc(("data", "csv", "columns", 2)) == "data.csv.columns[2]"
    assert format_loc(("data", "train", "SourceSpec", "path")) == "data.train.path"
    assert format_loc(()) == "(top level)"


def test_allowed_keys_are_those_of_the_section_holding_the_key():
    assert allowed_keys(("training", "early_stopping", "x")) == [
        "min_delta",
        "monitor",
        "patience",
        "restore_best_weights",
    ]
    assert "transform" in allowed_keys(("features", "age", "x"))  # any column: the specs' keys
