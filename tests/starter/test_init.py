"""`mlcli init`: dialect sniffing, column profiling and a config that `mlcli train` accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import uci_like as _uci_like
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.config.inheritance import presets_folder
from mlcli.config.loading import load_config
from mlcli.starter.profiling import profile_column, profile_target
from mlcli.training.validate import validate

runner = CliRunner()


def _profile(values: list, name: str = "x") -> tuple[str, str]:
    profile = profile_column(name, pa.chunked_array([values]))
    return profile.kind, profile.reason


def test_identifiers_are_excluded_with_a_reason():
    assert _profile(list(range(1, 301)), "customer")[0] == "excluded"  # counts up
    kind, reason = _profile([f"u-{i:04x}" for i in range(300)], "user_id")
    assert kind == "excluded"
    assert "identifier" in reason
    shuffled = np.random.default_rng(0).permutation(300).tolist()
    assert _profile(shuffled, "amount")[0] == "numeric"  # unique, but neither named nor ordered


def test_low_cardinality_integers_are_categories_and_wide_ones_numbers():
    rng = np.random.default_rng(1)
    kind, reason = _profile(rng.integers(1, 6, 400).tolist(), "grade")
    assert kind == "categorical"
    assert "5 distinct" in reason
    assert _profile(rng.integers(0, 90, 400).tolist(), "age")[0] == "numeric"
    assert _profile(rng.integers(0, 2, 400).tolist(), "flag")[0] == "binary"


def test_free_text_gets_a_sequence_length_and_short_strings_are_categories():
    rng = np.random.default_rng(2)
    words = ["cheap", "offer", "call", "now", "meeting", "at", "noon", "see", "you"]
    texts = [" ".join(rng.choice(words, rng.integers(5, 12))) for _ in range(300)]
    profile = profile_column("message", pa.chunked_array([texts]))
    assert profile.kind == "text"
    assert profile.sequence_length is not None and 16 <= profile.sequence_length <= 256
    assert _profile(rng.choice(["red", "green", "blue"], 300).tolist())[0] == "categorical"


def rng_choice(values: range, size: int) -> list[int]:
    return np.random.default_rng(4).choice(list(values), size).tolist()


def test_dates_are_categories_when_few_and_excluded_when_many():
    few = [f"2024-0{m}-01" for m in rng_choice(range(1, 7), 300)]
    kind, reason = _profile(few, "month_start")
    assert (kind, "dates" in reason) == ("categorical", True)
    days = np.datetime64("2020-01-01") + np.random.default_rng(3).integers(0, 900, 300)
    kind, reason = _profile([str(d) for d in days], "signup")
    assert kind == "excluded"
    assert "date" in reason


def test_constant_empty_and_skewed_columns():
    assert _profile(["x"] * 50)[0] == "excluded"
    assert _profile([None] * 50)[0] == "excluded"
    amounts = np.random.default_rng(5).lognormal(3, 2, 500).round(2).tolist()
    profile = profile_column("amount", pa.chunked_array([amounts]))
    assert (profile.kind, profile.transform) == ("numeric", "log")


def test_target_task_and_rarer_positive_class():
    labels = pa.chunked_array([["no"] * 80 + ["yes"] * 20])
    target = profile_target("y", labels, task=None)
    assert (target.task, target.positive_class) == ("binary", "yes")
    values = pa.chunked_array([np.linspace(0, 10, 200).tolist()])
    assert profile_target("v", values, task=None).task == "regression"
    assert profile_target("v", values, task="regression").reason.startswith("numbers")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_init_writes_a_commented_config_that_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _uci_like(tmp_path)
    result = runner.invoke(app, ["init", str(data), "--target", "3", "-o", "cfg/people.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "cfg/people.yaml"
    assert "col_3" in result.stdout and "target: binary" in result.stdout
    text = (tmp_path / "cfg" / "people.yaml").read_text()
    assert "# names for a file without a header line" in text
    config = load_config(tmp_path / "cfg" / "people.yaml")
    assert config.data.csv.header is False and config.data.csv.skip_rows == 1
    assert "?" in config.data.csv.na_values and config.data.csv.trim_whitespace
    assert (config.target.column, config.target.task) == ("col_3", "binary")
    assert config.features.declared()["col_1"].type == "categorical"
    report = validate(config)
    assert report.feature_types == {"col_0": "numeric", "col_1": "categorical", "col_2": "numeric"}


def test_init_keeps_an_existing_config_unless_forced(tmp_path, tiny_csv):
    output = _write(tmp_path / "config.yaml", "name: mine\n")
    args = ["init", str(tiny_csv), "--target", "label", "-o", str(output)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--force" in result.stderr
    assert output.read_text() == "name: mine\n"
    assert runner.invoke(app, [*args, "--force", "-q"]).exit_code == 0
    document = yaml.safe_load(output.read_text())
    assert document["features"]["review"]["type"] == "text"
    assert "id" in document["features"]["exclude"]


def test_unknown_target_is_a_data_error_with_a_suggestion(tmp_path, tiny_csv):
    result = runner.invoke(
        app, ["init", str(tiny_csv), "--target", "lable", "-o", str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 3
    assert "did you mean 'label'" in result.stderr
    assert not (tmp_path / "c.yaml").exists()


def test_init_reads_parquet_and_json_output(tmp_path, monkeypatch):
    from conftest import make_table

    monkeypatch.chdir(tmp_path)
    pq.write_table(make_table(200), tmp_path / "table.parquet")
    result = runner.invoke(
        app, ["init", "table.parquet", "--target", "value", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"]["task"] == "regression"
    assert report["csv"] == {}
    config = load_config(tmp_path / "config.yaml")
    assert config.data.train == str((tmp_path / "table.parquet").resolve())  # from its folder


def test_init_imports_no_tensorflow():
    code = "import sys, mlcli.cli.app, mlcli.starter.init; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("target", "task", "embedding", "members", "smoothing", "rate"),
    [
        ("col_3", "binary", "periodic", 4, 0.1, 0.001),
        ("col_1", "multiclass", "periodic", 4, 0.1, 0.001),
        ("col_2", "regression", "piecewise_linear", 8, 0.0, 0.002),
    ],
)
def test_the_written_model_and_training_are_the_tasks_measured_recipe(
    tmp_path, target, task, embedding, members, smoothing, rate
):
    data = _uci_like(tmp_path, rows=200)
    output = tmp_path / "config.yaml"
    result = runner.invoke(app, ["init", str(data), "-t", target, "-o", str(output), "-q"])
    assert result.exit_code == 0, result.output
    config = load_config(output)
    assert config.target.task == task
    assert config.model.type == "mlp"
    assert config.model.numeric_embedding.type == embedding
    assert config.model.ensemble == members
    assert config.training.label_smoothing == smoothing
    assert config.training.learning_rate == rate
    regression = task == "regression"
    assert (config.training.learning_rate_schedule == "cosine") is regression
    assert (config.model.numeric_embedding.binning == "tree") is regression


def test_a_table_large_enough_to_stream_gets_quantile_bins(tmp_path, monkeypatch):
    monkeypatch.setattr("mlcli.starter.init.STREAMING_THRESHOLD_BYTES", 100)
    output = tmp_path / "config.yaml"
    data = _uci_like(tmp_path, rows=200)
    result = runner.invoke(app, ["init", str(data), "-t", "col_2", "-o", str(output), "-q"])
    assert result.exit_code == 0, result.output
    embedding = load_config(output).model.numeric_embedding
    assert (embedding.type, embedding.binning) == ("piecewise_linear", "quantile")


@pytest.mark.parametrize(("target", "task"), [("col_3", "binary"), ("col_2", "regression")])
def test_written_config_trains_unchanged(tmp_path, monkeypatch, target, task):
    from mlcli.training.train import train

    monkeypatch.chdir(tmp_path)
    data = _uci_like(tmp_path, rows=200)
    result = runner.invoke(app, ["init", str(data), "--target", target, "-q"])
    assert result.exit_code == 0, result.output
    run = train("config.yaml", overrides=["training.epochs=1"])
    assert (run / "model.keras").is_file()
    assert run.parent.name == "people"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["target"]["task"] == task
    assert json.loads((run / "manifest.json").read_text())["ensemble"] == saved["model"]["ensemble"]


@pytest.mark.parametrize(
    ("relative", "target", "task"),
    [
        ("adult/adult.data", "14", "binary"),
        ("bank_marketing/bank-full.csv", "y", "binary"),
        ("sms_spam/SMSSpamCollection", "0", "binary"),
        ("wine_quality/winequality-red.csv", "quality", "multiclass"),
        ("abalone/abalone.data", "8", "regression"),
        ("california_housing/housing_geron_variant.csv", "median_house_value", "regression"),
    ],
)
def test_init_on_shared_datasets_validates(shared_datasets, tmp_path, relative, target, task):
    output = tmp_path / "config.yaml"
    result = runner.invoke(
        app, ["init", str(shared_datasets / relative), "-t", target, "-o", str(output), "-q"]
    )
    assert result.exit_code == 0, result.output
    config = load_config(output)
    assert config.target.task == task
    validate(config)


def test_python_api(tiny_csv, tmp_path):
    import mlcli

    report = mlcli.init(tiny_csv, target="tier", task="multiclass", output=tmp_path / "c.yaml")
    assert report.target.task == "multiclass"
    assert {p.name: p.kind for p in report.columns}["grade"] == "categorical"
    config = load_config(tmp_path / "c.yaml")
    assert config.target.task == "multiclass"


@pytest.mark.parametrize(
    "nested",
    [
        pa.array([[i, 1] for i in range(60)], pa.list_(pa.int64())),
        pa.array([{"a": i} for i in range(60)], pa.struct([("a", pa.int64())])),
        pa.array([bytes([i]) for i in range(60)], pa.binary()),
    ],
)
def test_init_excludes_a_column_it_cannot_use_and_refuses_it_as_target(tmp_path, nested):
    x = np.random.default_rng(0).standard_normal(60)
    table = pa.table({"x": x, "odd": nested, "y": np.where(x > 0, "a", "b")})
    pq.write_table(table, tmp_path / "t.parquet")
    output = tmp_path / "c.yaml"
    result = runner.invoke(app, ["init", str(tmp_path / "t.parquet"), "-t", "y", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert load_config(output).features.exclude == ["odd"]
    kind = str(nested.type).split("<")[0]  # Parquet renames a list's item field
    assert f"Arrow type {kind}" in output.read_text()
    result = runner.invoke(
        app, ["init", str(tmp_path / "t.parquet"), "-t", "odd", "-o", str(tmp_path / "d.yaml")]
    )
    assert result.exit_code == 3
    assert "target column 'odd'" in result.stderr and f"Arrow type {kind}" in result.stderr


def test_init_with_presets_extends_them_and_leaves_their_keys_to_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _uci_like(tmp_path)
    presets = ["--preset", "models/resnet", "-p", "training/fast", "-p", "data/uci"]
    result = runner.invoke(app, ["init", str(data), "--target", "3", "-q", *presets])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "config.yaml").read_text()
    written = yaml.safe_load(text)
    assert written["extends"] == ["models/resnet", "training/fast", "data/uci"]
    assert "model" not in written  # the preset sets model.type: another family's keys
    # the preset sets every training key but label smoothing, which a classifier gets
    assert written["training"] == {"label_smoothing": 0.1}
    # the dialect the preset names is not repeated; what the file needs beyond it is written
    assert set(written["data"]["csv"]) == {"columns", "skip_rows"}
    assert "--preset models/resnet --preset training/fast" in text.splitlines()[0]
    config = load_config(tmp_path / "config.yaml")
    assert config.model.type == "resnet"
    assert config.data.csv.header is False and config.data.csv.na_values == ["?"]
    fast = yaml.safe_load((presets_folder() / "training" / "fast.yaml").read_text())
    assert config.training.batch_size == fast["training"]["batch_size"]


def test_init_keeps_the_keys_a_preset_file_leaves_unset(tmp_path, monkeypatch, tiny_csv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg").mkdir()
    _write(tmp_path / "cfg" / "mine.yaml", "training: {epochs: 3}\n")
    arguments = ["init", str(tiny_csv), "--target", "label", "-o", "cfg/config.yaml"]
    result = runner.invoke(app, [*arguments, "--preset", "./mine.yaml", "-q"])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((tmp_path / "cfg" / "config.yaml").read_text())
    assert "epochs" not in written["training"] and "batch_size" in written["training"]
    assert written["model"]["hidden_units"] == [128, 64]  # no preset sets the model
    assert load_config(tmp_path / "cfg" / "config.yaml").training.epochs == 3


def test_init_with_a_missing_preset_is_exit_2_and_writes_nothing(tmp_path, tiny_csv):
    output = tmp_path / "config.yaml"
    arguments = ["init", str(tiny_csv), "--target", "label", "-o", str(output)]
    result = runner.invoke(app, [*arguments, "--preset", "models/resnett"])
    assert result.exit_code == 2, result.output
    assert "no preset named 'models/resnett' (did you mean 'models/resnet'?)" in result.stderr
    assert not output.exists()
