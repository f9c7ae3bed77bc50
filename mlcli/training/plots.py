"""Plots a person would rather look at than read (matplotlib, no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_learning_curves(history_csv: Path, output: Path) -> None:
    """One panel per metric, training against validation, by epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with history_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
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
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
