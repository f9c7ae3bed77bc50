"""The shipped examples train as they are and learn (slow: real datasets, full configs).

Each example must beat its trivial baseline on its evaluation split (the test split where the
config has one, else the validation split) by a real margin. The baseline is computed from the
rows the run used, read again from the run's own config.yaml with mlcli's readers and checked
against the run's row counts: the share of the most frequent class for accuracy, 0.5 for AUC,
and predicting the training split's mean for RMSE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pytest
import yaml
from conftest import REPO
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()
EXAMPLES = sorted((REPO / "examples").glob("*/config*.yaml"))


@dataclass(frozen=True)
class Margin:
    """How far an example must beat its baselines on its evaluation split."""

    accuracy: float = 0.0  # classification: above the largest class's share of the rows
    auc: float = 0.0  # binary: above 0.5
    rmse_ratio: float = 1.0  # regression: at most this fraction of the training mean's RMSE


# Seeds 42, 43 and 44 scored (over the baseline): Adult accuracy +0.107, AUC 0.924 (seeds 42
# and 44; seed 43 stops at train's composition check, 1.3e-05 > 1e-05); bank marketing accuracy
# +0.009 to +0.012, AUC 0.79 to 0.80; California RMSE 0.40 of the mean's; SMS spam accuracy
# +0.105 to +0.111, AUC 0.97 to 0.98; wine quality accuracy +0.143 to +0.152. The margins are
# about half of that, so that they hold with room. Bank marketing is imbalanced (88% "no") and
# hard without the call's `duration`: its accuracy barely clears the majority class, so its AUC
# carries the test.
MARGINS = {
    "adult/config.yaml": Margin(accuracy=0.06, auc=0.35),
    "adult/config-presets.yaml": Margin(accuracy=0.06, auc=0.35),  # 0.8612 / 0.9135 measured
    "bank_marketing/config.yaml": Margin(accuracy=0.003, auc=0.2),
    "california_housing/config.yaml": Margin(rmse_ratio=0.6),
    "sms_spam/config.yaml": Margin(accuracy=0.06, auc=0.4),
    "wine_quality/config.yaml": Margin(accuracy=0.07),
}


def _example(config: Path) -> str:
    return f"{config.parent.name}/{config.name}"


@pytest.fixture(scope="module")
def trained() -> dict[Path, Path]:
    """Runs by config, each example trained at most once per module."""
    return {}


def _train(config: Path, runs: dict[Path, Path], folder: Path) -> Path:
    """The run directory of `mlcli train CONFIG`, from `runs` when it was trained already."""
    if config not in runs:
        result = runner.invoke(app, ["train", str(config), "--quiet", "--output", str(folder)])
        assert result.exit_code == 0, result.output
        runs[config] = Path(result.stdout.strip().splitlines()[-1])
    return runs[config]


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def baselines(run: Path) -> tuple[str, dict[str, float]]:
    """The evaluation split of `run` and the trivial baselines on it.

    The split is read again with mlcli's readers from the config the run saved (the same seed,
    so the same rows), and its size checked against what the run recorded.
    """
    from mlcli.config.loading import load_config
    from mlcli.data.splits import load_splits

    config = load_config(run / "config.yaml")
    splits = load_splits(config)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["rows"] == {
        "train": splits.train.num_rows,
        "validation": splits.validation.num_rows,
        "test": splits.test.num_rows if splits.test is not None else 0,
    }, "the splits read again are not the run's"
    split, table = (
        ("test", splits.test) if splits.test is not None else ("validation", splits.validation)
    )
    assert _metrics(run)[split]["rows"] == table.num_rows
    target = json.loads((run / "schema.json").read_text())["target"]
    evaluated = table.column(config.target.column)
    if target["task"] == "regression":  # in the unit of the metrics: target.scale applied
        scale = target.get("scale", 1.0)
        train_mean = pc.mean(splits.train.column(config.target.column)).as_py() * scale
        values = evaluated.to_numpy().astype(np.float64) * scale
        return split, {"rmse": float(np.sqrt(np.mean((values - train_mean) ** 2)))}
    counts = pc.value_counts(pc.cast(evaluated, pa.string())).field("counts")
    found = {"accuracy": pc.max(counts).as_py() / table.num_rows}
    if target["task"] == "binary":
        found["auc"] = 0.5
    return split, found


@pytest.mark.parametrize(
    ("task", "train", "validation", "expected"),
    [
        # the validation split's own majority ("b", 4 of 5), not the training split's ("a")
        ("binary", ["a", "a", "a", "b"], ["a", "b", "b", "b", "b"], {"accuracy": 0.8, "auc": 0.5}),
        ("multiclass", [1, 2, 3, 3], [1, 2, 2, 3], {"accuracy": 0.5}),
        # the training mean (2) in the metrics' unit (x10), against 20 and 40: sqrt(200)
        ("regression", [1.0, 2.0, 3.0], [2.0, 4.0], {"rmse": 200**0.5}),
    ],
)
def test_baselines_are_the_trivial_predictions(tmp_path, task, train, validation, expected):
    """A hand-written run folder: the baselines are exact, no training needed."""
    for name, labels in (("train", train), ("validation", validation)):
        pa_csv.write_csv(pa.table({"x": list(range(len(labels))), "y": labels}), tmp_path / name)
    run = tmp_path / "run"
    run.mkdir()
    scale = {"scale": 10.0} if task == "regression" else {}
    config = {
        "name": "tiny",
        "data": {"train": str(tmp_path / "train"), "validation": str(tmp_path / "validation")},
        "target": {"column": "y", "task": task, **scale},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = {"train": len(train), "validation": len(validation), "test": 0}
    (run / "manifest.json").write_text(json.dumps({"rows": rows}))
    (run / "metrics.json").write_text(json.dumps({"validation": {"rows": len(validation)}}))
    (run / "schema.json").write_text(json.dumps({"target": {"task": task, **scale}}))
    split, found = baselines(run)
    assert split == "validation"
    assert found == pytest.approx(expected)


@pytest.mark.slow
def test_adult_example_reaches_its_published_accuracy(trained, tmp_path_factory):
    config = REPO / "examples" / "adult" / "config.yaml"
    metrics = _metrics(_train(config, trained, tmp_path_factory.mktemp("runs")))
    assert metrics["test"]["rows"] == 16281
    assert metrics["test"]["accuracy"] >= 0.850


@pytest.mark.slow
@pytest.mark.parametrize("config", EXAMPLES, ids=_example)
def test_every_example_beats_its_trivial_baseline(trained, tmp_path_factory, config: Path):
    margin = MARGINS.get(_example(config))
    assert margin is not None, f"{_example(config)}: give the new example a margin in MARGINS"
    run = _train(config, trained, tmp_path_factory.mktemp("runs"))
    metrics = _metrics(run)
    assert metrics["validation"]["rows"] > 0
    split, baseline = baselines(run)
    scores = metrics[split]
    needed = {
        "accuracy": baseline.get("accuracy", 0.0) + margin.accuracy,
        "auc": baseline.get("auc", 0.0) + margin.auc,
        "rmse": baseline.get("rmse", 0.0) * margin.rmse_ratio,
    }
    summary = ", ".join(
        f"{name} {scores[name]:.4f} (baseline {value:.4f}, needs "
        f"{'<=' if name == 'rmse' else '>='} {needed[name]:.4f})"
        for name, value in baseline.items()
    )
    if "rmse" in baseline:  # the baseline is in the run's unit: about the std it trained with
        std = json.loads((run / "schema.json").read_text())["target"]["std"]
        assert 0.8 * std < baseline["rmse"] < 1.25 * std, (baseline, std)
    print(f"{_example(config)} on {split} ({scores['rows']} rows): {summary}")
    for name in baseline:
        if name == "rmse":
            assert scores[name] <= needed[name], f"{_example(config)} {split}: {summary}"
        else:
            assert scores[name] >= needed[name], f"{_example(config)} {split}: {summary}"


def _predict_events(run: Path, data: str, output: Path, *, keras: bool) -> list[dict[str, Any]]:
    """`mlcli predict` on `data` (read with the run's CSV options) into Parquet; its events."""
    import os

    from mlcli.inference.choice import ENVIRONMENT

    if keras:
        os.environ[ENVIRONMENT] = "keras"
    try:
        arguments = ["predict", str(run), "--data", data, "-o", str(output), "--log-format", "json"]
        result = runner.invoke(app, arguments)
    finally:
        os.environ.pop(ENVIRONMENT, None)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("config", EXAMPLES, ids=_example)
def test_the_light_path_gives_the_keras_models_outputs_on_every_example(tmp_path, config: Path):
    """One epoch of each example; predict on its training file through ONNX Runtime and through
    Keras: the same outputs within the light check's tolerance (text columns: Keras, named)."""
    import pyarrow.parquet as pq

    from mlcli.inference.conversion import LIGHT_TOLERANCE

    arguments = ["train", str(config), "--quiet", "--output", str(tmp_path / "runs")]
    result = runner.invoke(app, [*arguments, "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    train = yaml.safe_load((run / "config.yaml").read_text())["data"]["train"]
    data = str(train[0] if isinstance(train, list) else train)
    light = _predict_events(run, data, tmp_path / "light.parquet", keras=False)
    _predict_events(run, data, tmp_path / "keras.parquet", keras=True)
    first = light[0]
    assert first["event"] == "inference"
    columns = json.loads((run / "schema.json").read_text())["columns"]
    if any(column["type"] == "text" for column in columns):
        assert first["message"].startswith("keras (text column"), first
        return
    assert first["message"].startswith("onnxruntime"), first
    found = pq.read_table(tmp_path / "light.parquet")
    expected = pq.read_table(tmp_path / "keras.parquet")
    if not pa.types.is_floating(found.column("prediction").type):  # labels, a tie aside
        same = pc.sum(pc.equal(found.column("prediction"), expected.column("prediction")))
        assert same.as_py() >= found.num_rows - 2
    for name in found.column_names:
        if pa.types.is_floating(found.column(name).type):
            ours = found.column(name).to_numpy().astype(np.float64)
            theirs = expected.column(name).to_numpy().astype(np.float64)
            scale = max(1.0, float(np.abs(theirs).max()))
            assert float(np.abs(ours - theirs).max()) <= LIGHT_TOLERANCE * scale, name
    print(f"{_example(config)}: {found.num_rows} rows, {first['message']}")
