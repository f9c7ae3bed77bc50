"""The MLflow reporter passes the end-of-training summary on to the user's reporter."""

from __future__ import annotations

import io
import json

import pytest

from mlcli.reporting import JsonReporter, TrainingSummary

pytest.importorskip("mlflow")


def test_the_summary_reaches_the_users_reporter_once():
    from mlcli.tracking.mlflow import TrackingReporter

    stream = io.StringIO()
    summary = TrainingSummary(
        run="runs/a/1",
        metrics={"validation": {"loss": 0.5, "rows": 10}},
        kept_epoch={"epoch": 2, "epochs_run": 4, "why": "early stopping restored it"},
        seconds={"fit": 1.0, "total": 1.0},
    )
    TrackingReporter(JsonReporter(stream), client=None, run_id="r").summary(summary)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["kept_epoch"] == summary.kept_epoch
