"""The end-of-training summary in each output form: plain lines, one JSON event, a rich
table, or nothing with --quiet."""

from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from mlcli.reporting import (
    JsonReporter,
    QuietReporter,
    Reporter,
    RichReporter,
    TrainingSummary,
    make_reporter,
)

values = st.floats(0.0, 1e6, allow_nan=False)
split_metrics = st.dictionaries(
    st.sampled_from(["loss", "accuracy", "auc", "rmse"]), values, min_size=1
).map(lambda m: {**m, "rows": 100})
summaries = st.builds(
    TrainingSummary,
    run=st.just("runs/income/20260101-000000-abcdef"),
    metrics=st.dictionaries(st.sampled_from(["train", "validation", "test"]), split_metrics),
    kept_epoch=st.builds(
        lambda epoch, extra: {
            "epoch": epoch,
            "epochs_run": epoch + extra,
            "epochs": 30,
            "reason": "best_epoch",
            "why": "early stopping restored the epoch of the best val_loss",
        },
        st.integers(1, 20),
        st.integers(0, 5),
    ),
    seconds=st.fixed_dictionaries({"data": values, "fit": values, "other": values}).map(
        lambda s: {**s, "total": sum(s.values())}
    ),
    threshold=st.sampled_from([None, 0.5]),
)


@settings(max_examples=30, deadline=None)
@given(summary=summaries)
def test_json_is_one_summary_event_holding_all_of_it(summary):
    stream = io.StringIO()
    JsonReporter(stream).summary(summary)
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "summary"
    assert {k: v for k, v in event.items() if k not in ("event", "time")} == summary.to_dict()


@settings(max_examples=30, deadline=None)
@given(summary=summaries)
def test_plain_text_is_one_summary_line_per_split_then_kept_and_time(summary):
    stream = io.StringIO()
    Reporter(stream).summary(summary)
    lines = stream.getvalue().splitlines()
    assert all(line.startswith("[summary] ") for line in lines)
    assert "\x1b" not in stream.getvalue()  # no colour codes in cron
    threshold = summary.threshold is not None
    assert len(lines) == len(summary.metrics) + threshold + 2
    for line, split in zip(lines, summary.metrics, strict=False):
        assert line.startswith(f"[summary] {split}: ")
    epoch = summary.kept_epoch
    assert lines[-2].startswith(f"[summary] kept epoch {epoch['epoch']} of {epoch['epochs_run']}")
    assert lines[-1].startswith("[summary] time ")


def test_quiet_reports_no_summary():
    stream = io.StringIO()
    summary = TrainingSummary("runs/a/1", {"test": {"loss": 0.5}}, {"epoch": 1}, {"total": 1.0})
    QuietReporter(stream).summary(summary)
    make_reporter(quiet=True, log_format="json", interactive=True).summary(summary)
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_table_of_splits_by_metric_with_the_kept_epoch_and_time():
    summary = TrainingSummary(
        run="runs/income/20260101-000000-abcdef",
        metrics={
            "train": {"loss": 0.25, "auc": 0.94, "rows": 26049},
            "validation": {"loss": 0.2808, "auc": 0.9271, "rows": 6512},
            "test": {"loss": 0.2837, "auc": 0.9237, "rows": 16281},
        },
        kept_epoch={"epoch": 8, "epochs_run": 12, "why": "early stopping restored it"},
        seconds={"data": 2.0, "fit": 10.0, "other": 8.0, "total": 20.0},
        threshold=0.5,
    )
    reporter = RichReporter()
    reporter.console = Console(file=io.StringIO(), width=120, force_terminal=True)
    reporter.summary(summary)
    plain = reporter.console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[" in plain  # styled for a terminal
    for expected in ("income/20260101-000000-abcdef", "0.9237", "16281", "threshold 0.5"):
        assert expected in plain
    assert "epoch 8 of 12: early stopping restored it" in plain
    assert "fit 10.0s (50%)" in plain and "20.0s" in plain
