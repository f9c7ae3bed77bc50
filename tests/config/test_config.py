"""Config errors name the dotted key and exit 2; overrides and ${VAR} are typed by the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.schema import load_config
from mlcli.errors import ConfigError

runner = CliRunner()


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


def test_out_of_range_value_names_key(write_config):
    path = write_config(model={"dropout": 1.5})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "model.dropout" in result.stderr


def test_misspelt_feature_type_suggests(write_config):
    path = write_config(features={"age": "numerc"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "features.age" in result.stderr and "did you mean 'numeric'" in result.stderr


def test_missing_config_file_is_exit_2(tmp_path: Path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.stderr and "not found" in result.stderr


def test_yaml_syntax_error_gives_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndata: [unclosed\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "line" in result.stderr


def test_target_listed_as_feature_is_rejected(write_config):
    path = write_config(features={"label": "categorical"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "'label'" in result.stderr


def test_missing_column_is_exit_3_and_named(write_config):
    path = write_config(features={"agee": "numeric"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 3
    assert "'agee'" in result.stderr and "did you mean 'age'" in result.stderr


def test_missing_data_file_is_exit_3(write_config):
    path = write_config(data={"train": "absent.csv"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 3
    assert "absent.csv" in result.stderr


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


def test_environment_variables_are_filled(write_config, monkeypatch):
    path = write_config(training={"epochs": "${EPOCHS}", "batch_size": "${BATCH:-16}"})
    monkeypatch.setenv("EPOCHS", "4")
    monkeypatch.delenv("BATCH", raising=False)
    config = load_config(path)
    assert (config.training.epochs, config.training.batch_size) == (4, 16)
    monkeypatch.delenv("EPOCHS")
    with pytest.raises(ConfigError, match=r"training.epochs.*\$\{EPOCHS\}"):
        load_config(path)


def test_validate_reports_inferred_types(write_config):
    path = write_config(features={"exclude": ["id", "tier", "value"]})
    result = runner.invoke(app, ["validate", str(path), "--log-format", "json"])
    assert result.exit_code == 0, result.output
    assert '"age": "numeric"' in result.stdout
    assert '"member": "binary"' in result.stdout
    assert '"review": "text"' in result.stdout
    assert '"color": "categorical"' in result.stdout


@pytest.mark.parametrize("arguments", [["--help"], ["validate", "{config}"]])
def test_help_and_validate_do_not_import_tensorflow(arguments, write_config):
    config = write_config()
    args = [a.replace("{config}", str(config)) for a in arguments]
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mlcli.cli.app import app\n"
        f"result = CliRunner().invoke(app, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
