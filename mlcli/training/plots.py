"""Plots a person would rather look at than read (matplotlib, no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_learning_curves(history_csv: Path, output: Path, *, kept_epoch: int | None = None) -> None:
    """One panel per metric, training against validation, by epoch; the kept epoch marked.

    Args:
        history_csv: the run's history.csv (nothing is drawn when it has no rows).
        output: the PNG to write.
        kept_epoch: the epoch (from 1) whose weights the model kept, drawn as a dashed
            vertical line in every panel; None draws none.
    """
    with history_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    figure = learning_curves_figure(rows, kept_epoch=kept_epoch)
    import matplotlib.pyplot as plt  # after learning_curves_figure chose the Agg backend

    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)


def learning_curves_figure(rows: list[dict[str, str]], *, kept_epoch: int | None) -> Figure:
    """The learning curves of history.csv's rows (at least one) as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        k for k in rows[0] if k not in ("epoch", "learning_rate") and not k.startswith("val_")
    ]
    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        axis.plot(epochs, [float(row[metric]) for row in rows], marker="o", label="train")
        if f"val_{metric}" in rows[0]:
            values = [float(row[f"val_{metric}"]) for row in rows]
            axis.plot(epochs, values, marker="o", label="validation")
        if kept_epoch is not None:
            axis.axvline(
                kept_epoch, color="grey", linestyle="--", label=f"kept: epoch {kept_epoch}"
            )
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure
