"""Reading a config: YAML errors with their line and column, `${VAR}`, paths resolved once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.loading import config_to_yaml, load_config, load_document, parse_config
from mlcli.config.schema import SourceSpec
from mlcli.errors import ConfigError

runner = CliRunner()


def test_missing_config_file_is_exit_2(tmp_path: Path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.stderr and "not found" in result.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # an unclosed list is found where the file ends
        ("name: x\ndata: [unclosed\n", "line 3, column 1: expected ',' or ']'"),
        # a key indented deeper than its neighbour: the colon after it
        ("name: x\ndata:\n  train: a.csv\n   target: 1\n", "line 4, column 10: mapping values"),
    ],
)
def test_yaml_syntax_error_gives_line(tmp_path: Path, text: str, where: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: YAML does not parse at {where}" in result.stderr


def test_environment_variables_are_filled(write_config, monkeypatch):
    path = write_config(training={"epochs": "${EPOCHS}", "batch_size": "${BATCH:-16}"})
    monkeypatch.setenv("EPOCHS", "4")
    monkeypatch.delenv("BATCH", raising=False)
    config = load_config(path)
    assert (config.training.epochs, config.training.batch_size) == (4, 16)
    monkeypatch.delenv("EPOCHS")
    with pytest.raises(ConfigError, match=r"training.epochs.*\$\{EPOCHS\}"):
        load_config(path)


def test_overrides_are_applied_after_variables_are_filled(write_config, monkeypatch):
    path = write_config(training={"epochs": "${EPOCHS}"})
    monkeypatch.setenv("EPOCHS", "4")
    document = load_document(path, overrides=["training.epochs=${EPOCHS}"])
    assert document["training"]["epochs"] == "${EPOCHS}"  # a --set value is taken as written


def test_a_config_that_is_not_a_mapping_is_rejected(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=f"{path}: the config must be a YAML mapping .* list"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^x\.yaml: the config must be a YAML mapping .* empty$"):
        parse_config(None, source="x.yaml")


def test_an_empty_file_names_the_required_keys(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="config key `name` is required but missing"):
        load_config(path)


def test_relative_data_paths_are_taken_from_the_config_folder(tmp_path: Path, write_config):
    path = write_config(
        data={
            "train": "data.csv",
            "validation": {"path": ["a/*.csv", "~/b.csv"]},
            "test": 0.2,
        }
    )
    config = load_config(path)
    assert config.data.train == str(tmp_path / "data.csv")
    assert isinstance(config.data.validation, SourceSpec)
    assert config.data.validation.path == [
        str(tmp_path / "a" / "*.csv"),
        str(Path("~/b.csv").expanduser()),
    ]
    assert config.data.test == 0.2


def test_parse_config_resolves_against_the_working_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    document = {"name": "x", "data": {"train": "t.csv"}, "target": {"column": "y"}}
    assert parse_config(document).data.train == str(tmp_path / "t.csv")


def test_config_to_yaml_reads_back_as_the_same_config(tmp_path: Path, write_config):
    config = load_config(write_config(model={"type": "resnet", "blocks": 3}))
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(config))
    assert load_config(again) == config
    assert config_to_yaml(config).splitlines()[:2] == ["name: tiny", "seed: 7"]


_SECRET = "s3cret-7Hq2vXw"


@pytest.mark.parametrize(
    ("section", "key", "written"),
    [
        ("tracking", ("mlflow", "uri"), "${MLFLOW_URI}"),  # a whole value
        ("tracking", ("mlflow", "uri"), "http://ann:${MLFLOW_PW}@mlflow.example:5000/"),  # a part
        ("tracking", ("mlflow", "experiment"), "${MLFLOW_EXP:-exp}-${MLFLOW_PW}"),
        ("target", ("positive_class",), "${POSITIVE}"),
        ("data", ("csv", "na_values"), ["", "${NA_TOKEN}"]),  # an item of a list
        ("training", ("epochs",), "${EPOCHS}"),  # a number, filled as text
    ],
)
def test_config_to_yaml_writes_references_as_written(
    write_config, tmp_path, monkeypatch, section, key, written
):
    for name in ("MLFLOW_URI", "MLFLOW_PW", "POSITIVE", "NA_TOKEN"):
        monkeypatch.setenv(name, f"{name.lower()}-{_SECRET}")
    monkeypatch.setenv("EPOCHS", "3")
    value: object = written
    for part in reversed(key[1:]):
        value = {part: value}
    sections = {"target": {"column": "label", "task": "binary"}} if section == "target" else {}
    path = write_config(**{section: {**sections.get(section, {}), key[0]: value}})
    config = load_config(path)
    text = config_to_yaml(config)
    assert _SECRET not in text
    saved = yaml.safe_load(text)[section]
    for part in key:
        saved = saved[part]
    assert saved == written
    again = tmp_path / "saved.yaml"
    again.write_text(text)
    assert load_config(again) == config  # the reference is filled again


def test_keys_that_say_where_the_run_is_are_written_as_filled(write_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "tiny-model")
    monkeypatch.setenv("DATA_FILE", "data.csv")
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "runs"))
    path = write_config(data={"train": "${DATA_FILE}"}, output={"dir": "${RUNS_DIR}"})
    path.write_text(path.read_text().replace("name: tiny", "name: ${MODEL_NAME}"))
    saved = yaml.safe_load(config_to_yaml(load_config(path)))
    assert saved["name"] == "tiny-model"
    assert saved["data"]["train"] == str(tmp_path / "data.csv")  # absolute, as resolved
    assert saved["output"]["dir"] == str(tmp_path / "runs")


def test_a_referenced_key_that_is_overridden_is_written_as_overridden(write_config, monkeypatch):
    monkeypatch.setenv("MLFLOW_URI", f"http://ann:{_SECRET}@mlflow.example/")
    path = write_config(tracking={"mlflow": {"uri": "${MLFLOW_URI}"}})
    config = load_config(path, overrides=["tracking.mlflow.uri=sqlite:///other.db"])
    assert yaml.safe_load(config_to_yaml(config))["tracking"]["mlflow"]["uri"] == (
        "sqlite:///other.db"
    )


def test_a_copied_config_still_holds_no_filled_value(write_config, monkeypatch):
    """A config made from a loaded one (`model_copy`) has no references of its own: any text
    that holds a value filled from the environment gets `${VAR}` in its place."""
    monkeypatch.setenv("MLFLOW_URI", f"http://ann:{_SECRET}@mlflow.example/")
    config = load_config(write_config(tracking={"mlflow": {"uri": "${MLFLOW_URI}"}}))
    copied = config.model_copy(update={"seed": 8})
    text = config_to_yaml(copied)
    assert _SECRET not in text and "uri: ${MLFLOW_URI}" in text


def test_allow_unset_keeps_an_unset_reference_as_written(write_config, monkeypatch):
    monkeypatch.delenv("MLFLOW_URI", raising=False)
    path = write_config(tracking={"mlflow": {"uri": "${MLFLOW_URI}"}})
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.uri.*\$\{MLFLOW_URI\} is not set"):
        load_config(path)
    config = load_config(path, allow_unset=True)
    assert config.tracking is not None and config.tracking.mlflow is not None
    assert config.tracking.mlflow.uri == "${MLFLOW_URI}"
    assert "uri: ${MLFLOW_URI}" in config_to_yaml(config)
