"""The learning curves: one panel per metric, the kept epoch marked in each."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mlcli.training.plots import learning_curves_figure, plot_learning_curves


def _history(epochs: int) -> list[dict[str, str]]:
    return [
        {
            "epoch": str(epoch),
            "accuracy": str(0.5 + epoch / 100),
            "loss": str(1.0 / (epoch + 1)),
            "val_accuracy": str(0.5 + epoch / 200),
            "val_loss": str(1.0 / (epoch + 1) + 0.1),
        }
        for epoch in range(epochs)
    ]


def _kept_lines(figure) -> list[tuple[str, list[float]]]:
    return [
        (line.get_label(), list(line.get_xdata()))
        for axis in figure.axes
        for line in axis.get_lines()
        if line.get_label().startswith("kept")
    ]


@pytest.mark.parametrize(("epochs", "kept"), [(5, 3), (1, 1), (4, 4)])
def test_every_panel_marks_the_kept_epoch_in_its_legend(epochs, kept):
    figure = learning_curves_figure(_history(epochs), kept_epoch=kept)
    assert len(figure.axes) == 2  # accuracy and loss
    assert _kept_lines(figure) == [(f"kept: epoch {kept}", [kept, kept])] * 2
    for axis in figure.axes:
        legend = [text.get_text() for text in axis.get_legend().get_texts()]
        assert legend == ["train", "validation", f"kept: epoch {kept}"]


def test_no_kept_epoch_draws_no_line(tmp_path: Path):
    assert _kept_lines(learning_curves_figure(_history(3), kept_epoch=None)) == []
    history = tmp_path / "history.csv"
    with history.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(_history(1)[0]))
        writer.writeheader()
        writer.writerows(_history(3))
    plot_learning_curves(history, tmp_path / "plots" / "curves.png", kept_epoch=2)
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 0
