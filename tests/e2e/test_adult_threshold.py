"""The Adult example end to end: a temperature-calibrated run, a threshold chosen for
precision 0.9 on the run's own validation rows and saved, then predict and the server deciding
with it on adult.test (slow: trains the full example)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import REPO
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()
ADULT = REPO / "examples" / "adult"


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.slow
def test_adult_precision_threshold_is_saved_and_applied_by_predict_and_serve(tmp_path):
    from mlcli.data.splits import load_splits
    from mlcli.runs.loading import open_run

    out = _invoke(
        "train",
        str(ADULT / "config.yaml"),
        "--quiet",
        "--output",
        str(tmp_path / "runs"),
        "--set",
        "training.calibration=temperature",
    )
    run = Path(out.strip().splitlines()[-1])
    calibration = json.loads((run / "manifest.json").read_text())["calibration"]
    assert calibration["after"]["log_loss"] <= calibration["before"]["log_loss"]
    # the run's own validation rows: its config's split, as training made it
    validation = load_splits(open_run(run, with_model=False).config).validation
    assert (
        validation.num_rows == json.loads((run / "manifest.json").read_text())["rows"]["validation"]
    )
    pq.write_table(validation, tmp_path / "validation.parquet")
    _invoke(
        "evaluate",
        str(run),
        "--data",
        str(tmp_path / "validation.parquet"),
        "--choose-threshold",
        "precision=0.9",
        "--save",
        "--quiet",
    )
    record = json.loads((run / "threshold.json").read_text())
    assert record["metrics"]["precision"] >= 0.9 and record["threshold"] > 0.5

    test = str(ADULT / "adult.test")
    metrics = json.loads(_invoke("evaluate", str(run), "--data", test, "--json").splitlines()[-1])
    assert metrics["threshold"] == record["threshold"]
    assert {"ece", "brier", "uncalibrated/ece", "uncalibrated/brier"} <= set(metrics)

    _invoke("predict", str(run), "--data", test, "--output", str(tmp_path / "p.csv"), "--quiet")
    predictions = pa_csv.read_csv(tmp_path / "p.csv")
    probability = np.asarray(predictions.column("probability_>50K").to_pylist())
    labels = predictions.column("prediction").to_pylist()
    assert [label == ">50K" for label in labels] == list(probability >= record["threshold"])
    between = np.flatnonzero((probability >= 0.5) & (probability < record["threshold"]))[:50]
    assert len(between) > 0  # rows that 0.5 would call >50K and the saved threshold does not

    from mlcli.data.sources import source_for_run
    from mlcli.data.tables import read_table
    from mlcli.serving.payloads import parse_predict, predict_response
    from mlcli.serving.servables import load_servable

    loaded = open_run(run, with_model=False)
    source = source_for_run(loaded.config, test, names=loaded.schema.input_names)
    rows = read_table(source).take(between).select(loaded.schema.input_names).to_pylist()
    servable = load_servable(run)
    body = json.dumps({"instances": rows}).encode()
    request = parse_predict(body, servable.signature, max_rows=1000)
    answer = predict_response(
        servable.call(request.columns), servable.signature, columnar=request.columnar
    )
    assert [p["label"] for p in answer["predictions"]] == ["<=50K"] * len(between)
