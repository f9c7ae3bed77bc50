"""The folder one `mlcli evaluate` leaves in the run: metrics.json, report.md and plots.

```
evaluations/<data-name>-<time>/
  metrics.json            the flat metrics, the data, the gates that failed, the baseline
  report.md               the same as tables a person can read, with the plots inline
  confusion_matrix.png    classification
  roc.png pr.png calibration.png           binary (ROC one-vs-rest for multiclass)
  residuals.png predicted_vs_actual.png    regression
```

The plots are scikit-learn's displays drawn with matplotlib's Agg backend (no display needed).
The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcli import files
from mlcli.evaluation.metrics import CALIBRATION_BINS
from mlcli.inference.labels import BINARY_THRESHOLD, positive
from mlcli.runs import directory as runs
from mlcli.runs.loading import LoadedRun

if TYPE_CHECKING:
    from mlcli.evaluation.result import Evaluation
    from mlcli.features.drift import DriftReport

_MAX_ROC_CLASSES = 10


def dated_folder(parent: Path, data_name: str) -> Path:
    """`parent/<data-name>-<time>`, numbered when one of that name exists (evaluations,
    explanations)."""
    base = parent / f"{data_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, number = base, 1
    while folder.exists():  # two in one second
        number += 1
        folder = base.with_name(f"{base.name}-{number}")
    return folder


def draw_figure(
    path: Path, draw: Callable[[Any], None], *, size: tuple[float, float] = (5, 4.5)
) -> None:
    """Draws one matplotlib axis with `draw` (Agg backend, no display) and saves it as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=size)
    try:
        draw(axis)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)


def _classification_plots(
    folder: Path,
    labels: np.ndarray,
    outputs: np.ndarray,
    classes: list[Any],
    task: str,
    cut: float,
    before: np.ndarray | None = None,
) -> list[str]:
    from sklearn import metrics

    if task == "binary":
        scores = outputs.reshape(-1)
        predicted = positive(scores, threshold=cut).astype(int)
    else:
        predicted = np.argmax(outputs, axis=1)
    names = [str(c) for c in classes]
    matrix = metrics.confusion_matrix(labels, predicted, labels=list(range(len(classes))))
    display = metrics.ConfusionMatrixDisplay(matrix, display_labels=names)
    draw_figure(folder / "confusion_matrix.png", lambda ax: display.plot(ax=ax, colorbar=False))
    written = ["confusion_matrix.png"]
    if len(np.unique(labels)) < 2:
        return written  # curves need both classes
    if task == "binary":
        # the user's labels, so the axes say "Positive class: >50K", not 1
        named = np.asarray(names, dtype=object)[labels.reshape(-1).astype(int)]
        curves = {
            "roc.png": lambda ax: metrics.RocCurveDisplay.from_predictions(
                named, scores, pos_label=names[1], ax=ax
            ),
            "pr.png": lambda ax: metrics.PrecisionRecallDisplay.from_predictions(
                named, scores, pos_label=names[1], ax=ax
            ),
            "calibration.png": lambda ax: _calibration(ax, named, scores, names[1], before),
        }
        for name, draw in curves.items():
            draw_figure(folder / name, draw)
            written.append(name)
    elif len(classes) <= _MAX_ROC_CLASSES:

        def one_vs_rest(ax: Any) -> None:
            for index, name in enumerate(names):
                if 0 < np.sum(labels == index) < len(labels):
                    metrics.RocCurveDisplay.from_predictions(
                        labels == index, outputs[:, index], ax=ax, name=name
                    )
            ax.set_title("ROC, one class against the rest")

        draw_figure(folder / "roc.png", one_vs_rest)
        written.append("roc.png")
    return written


def _calibration(
    axis: Any, named: np.ndarray, scores: np.ndarray, positive_label: str, before: Any
) -> None:
    """The reliability diagram, in the user's labels; a calibrated run's before and after."""
    from sklearn.calibration import CalibrationDisplay

    if before is not None:
        CalibrationDisplay.from_predictions(
            named,
            before.reshape(-1),
            n_bins=10,
            strategy="quantile",
            pos_label=positive_label,
            name="before calibration",
            ax=axis,
        )
    CalibrationDisplay.from_predictions(
        named,
        scores,
        n_bins=10,
        strategy="quantile",
        pos_label=positive_label,
        name="model" if before is None else "calibrated",
        ax=axis,
    )
    axis.set_title(f"Reliability of P({positive_label})")


def _regression_plots(folder: Path, values: np.ndarray, outputs: np.ndarray) -> list[str]:
    from sklearn.metrics import PredictionErrorDisplay

    predicted = outputs.reshape(-1)
    written = []
    for name, kind in (
        ("residuals.png", "residual_vs_predicted"),
        ("predicted_vs_actual.png", "actual_vs_predicted"),
    ):

        def draw(axis: Any, kind: str = kind) -> None:
            PredictionErrorDisplay.from_predictions(
                values, predicted, kind=kind, subsample=2000, random_state=0, ax=axis
            )

        draw_figure(folder / name, draw)
        written.append(name)
    return written


def _number(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def markdown_report(result: Evaluation, plots: list[str], classes: list[Any]) -> str:
    """report.md: what was evaluated, the metrics as a table, the gates and the plots."""
    lines = [
        f"# Evaluation of {result.run.name}",
        "",
        f"- run: `{result.run}`",
        f"- data: `{result.data}`",
        f"- task: {result.task}",
        f"- rows: {int(result.metrics['rows'])}",
    ]
    if "threshold" in result.metrics:
        lines.append(
            f"- decision threshold: {result.metrics['threshold']:g} (positive at or above it)"
        )
    if result.calibration:
        lines.append(f"- calibration: {result.calibration} (fitted on the validation split)")
    lines += ["", "## Metrics", ""]
    headers = ["metric", "value"] + (["baseline", "change"] if result.baseline else [])
    lines += ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    per_class = [n for n in result.metrics if "/" in n]
    for name, value in result.metrics.items():
        if name in ("rows", "threshold") or name in per_class:
            continue
        row = [name, _number(value)]
        if result.baseline:
            old = result.baseline.get(name)
            row += ["" if old is None else _number(old)]
            row += ["" if old is None else f"{value - old:+.6g}"]
        lines.append("| " + " | ".join(row) + " |")
    if per_class:
        lines += ["", "## Per class", "", "| class | precision | recall | F1 |"]
        lines.append("| --- | --- | --- | --- |")
        for value in classes:
            cells = [
                _number(result.metrics[f"{kind}/{value}"]) for kind in ("precision", "recall", "f1")
            ]
            lines.append(f"| {value} | " + " | ".join(cells) + " |")
    if result.baseline_run is not None:
        lines += ["", f"Baseline: `{result.baseline_run}`"]
    if result.drift is not None:
        lines += drift_section(result.drift)
    if result.uncalibrated:
        lines += ["", "## Calibration", "", "| metric | before calibration | after |"]
        lines.append("| --- | --- | --- |")
        for name, value in result.uncalibrated.items():
            lines.append(f"| {name} | {_number(value)} | {_number(result.metrics[name])} |")
        lines += ["", f"ECE: {CALIBRATION_BINS} equal-width bins of the probability."]
    if result.chosen_threshold:
        chosen = result.chosen_threshold["metrics"]
        lines += ["", f"## Threshold chosen for {result.chosen_threshold['criterion']}", ""]
        lines += ["| threshold | precision | recall | f1 | accuracy | positives |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        shown = ("threshold", "precision", "recall", "f1", "accuracy", "positives")
        lines.append("| " + " | ".join(_number(chosen[name]) for name in shown) + " |")
        if result.threshold_saved is not None:
            lines += ["", f"Saved in `{result.threshold_saved}`."]
    lines += ["", "## Quality gates", ""]
    lines += [f"- FAILED: {f}" for f in result.failures] or ["- none failed"]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def drift_section(drift: DriftReport) -> list[str]:
    """report.md's drift table: each column's PSI, missing and unseen shares against training."""
    lines = ["", "## Drift from the training data", ""]
    lines += [
        "Population stability index per column: sum over buckets of (a - e) ln(a / e), shares "
        f"floored at {drift.epsilon:g}; under 0.1 little shift, above 0.25 a large one.",
        "",
        "| column | PSI | missing (training → here) | not in vocabulary (training → here) |",
        "| --- | --- | --- | --- |",
    ]
    for column in drift.columns:
        psi = "unavailable" if column.psi is None else f"{column.psi:.4f}"
        missing = f"{_share(column.training_missing_rate)} → {_share(column.missing_rate)}"
        unseen = ""
        if column.unseen_rate is not None:
            unseen = f"{_share(column.training_unseen_rate)} → {_share(column.unseen_rate)}"
            if column.unseen_examples:
                unseen += " (" + ", ".join(map(str, column.unseen_examples)) + ")"
        lines.append(f"| {column.name} | {psi} | {missing} | {unseen} |")
    return lines


def write_evaluation(
    loaded: LoadedRun,
    result: Evaluation,
    *,
    labels: np.ndarray,
    outputs: np.ndarray,
    data_name: str,
    before: np.ndarray | None = None,
) -> Path:
    """Writes the evaluation folder into the run and returns its path.

    `before`: a calibrated model's outputs before its calibration, drawn beside the outputs on
    the reliability diagram.
    """
    target = loaded.schema.target
    final = dated_folder(loaded.run.file(runs.EVALUATIONS), data_name)
    with files.atomic_directory(final) as folder:
        folder.chmod(0o755)  # mkdtemp's 0700 would hide the evaluation from a team's readers
        if target.task == "regression":
            plots = _regression_plots(folder, labels, outputs)
        else:
            plots = _classification_plots(
                folder,
                labels,
                outputs,
                target.classes,
                target.task,
                float(result.metrics.get("threshold", BINARY_THRESHOLD)),
                before,
            )
        files.write_json(
            folder / runs.METRICS,
            {
                "run": str(result.run),
                "data": result.data,
                "task": result.task,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "metrics": result.flat(),
                "baseline_run": str(result.baseline_run) if result.baseline_run else None,
                "failed_gates": result.failures,
                "drift": result.drift.to_dict() if result.drift is not None else None,
            },
        )
        files.write_text(folder / "report.md", markdown_report(result, plots, target.classes))
    return final
