"""The outcome of one `mlcli explain`, and the folder it leaves in the run.

```
explanations/<data-name>-<time>/
  importance.json     the metric, its baseline, each column's importance, spread and repeats
  importance.png      the ranking as bars, the spread as error bars
  report.md           the same as a table a person can read, with the chart inline
  attributions.csv    with --rows N: each explained row's SHAP value per raw column
```

The folder is written under a temporary name and renamed when complete (`mlcli.files`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcli import files
from mlcli.evaluation.attributions import Attributions
from mlcli.evaluation.importance import ColumnImportance
from mlcli.evaluation.report import dated_folder, draw_figure
from mlcli.runs import directory as runs

IMPORTANCE = "importance.json"
CHART = "importance.png"
REPORT = "report.md"
ATTRIBUTIONS = "attributions.csv"


@dataclass
class Explanation:
    """Which raw columns a run's model relies on, measured on one labelled table."""

    run: Path
    data: str
    task: str
    metric: str
    lower_is_better: bool
    baseline: float
    rows: int  # the labelled rows the importances were measured on
    repeats: int
    seed: int
    importances: list[ColumnImportance]
    attributions: Attributions | None = None
    attributed_rows: list[int] = field(default_factory=list)  # positions in the data
    classes: list[Any] = field(default_factory=list)
    folder: Path | None = None

    @property
    def worse(self) -> str:
        """How an importance reads: `log_loss increase` or `accuracy decrease`."""
        return f"{self.metric} {'increase' if self.lower_is_better else 'decrease'}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: importance.json, and what `--json` prints."""
        found: dict[str, Any] = {
            "run": str(self.run),
            "data": self.data,
            "task": self.task,
            "metric": self.metric,
            "importance_is": self.worse + " when the column is shuffled",
            "baseline": self.baseline,
            "rows": self.rows,
            "repeats": self.repeats,
            "seed": self.seed,
            "columns": [item.as_dict() for item in self.importances],
        }
        if self.attributions is not None:
            found["attributions"] = self.attribution_rows()
        if self.folder is not None:
            found["folder"] = str(self.folder)
        return found

    def attribution_rows(self) -> list[dict[str, Any]]:
        """One record per explained row: its position, output, base and SHAP values."""
        if self.attributions is None:
            return []
        found = self.attributions
        records = []
        for index, position in enumerate(self.attributed_rows):
            record: dict[str, Any] = {"row": position}
            if self.task == "multiclass":
                record["class"] = self.classes[int(found.output_index[index])]
            record["output"] = float(found.output[index])
            record["base"] = float(found.base[index])
            record.update(zip(found.columns, (float(v) for v in found.values[index]), strict=True))
            records.append(record)
        return records


def _chart(path: Path, result: Explanation) -> None:
    shown = list(reversed(result.importances))  # matplotlib draws the first bar at the bottom

    def draw(axis: Any) -> None:
        axis.barh(
            [item.column for item in shown],
            [item.mean for item in shown],
            xerr=[item.std for item in shown],
            color="tab:blue",
            ecolor="black",
            capsize=3,
        )
        axis.axvline(0.0, color="grey", linewidth=0.8)
        axis.set_xlabel(f"{result.worse} when shuffled (mean ± std of {result.repeats})")
        axis.set_title(f"Permutation importance, {result.rows} rows")
        axis.grid(axis="x", alpha=0.3)

    draw_figure(path, draw, size=(7, 1.5 + 0.35 * len(shown)))


def markdown_report(result: Explanation) -> str:
    """report.md: what was measured, the ranking as a table, the chart and the attributions."""
    lines = [
        f"# Explanation of {result.run.name}",
        "",
        f"- run: `{result.run}`",
        f"- data: `{result.data}`",
        f"- task: {result.task}",
        f"- metric: {result.metric} = {result.baseline:.6g} on {result.rows} labelled rows",
        f"- importance: the {result.worse} when one column's values are shuffled across the "
        f"rows, mean ± standard deviation over {result.repeats} shuffles (seed {result.seed})",
        "",
        "## Permutation importance",
        "",
        "| rank | column | importance | ± std |",
        "| --- | --- | --- | --- |",
    ]
    for rank, item in enumerate(result.importances, start=1):
        lines.append(f"| {rank} | {item.column} | {item.mean:.6g} | {item.std:.3g} |")
    lines += ["", f"![importance]({CHART})"]
    if result.attributions is not None:
        lines += [
            "",
            "## Per-row attributions",
            "",
            f"SHAP values of {len(result.attributed_rows)} rows in `{ATTRIBUTIONS}`: for each "
            "row, `base` plus the values of its columns is its `output` (the positive class's "
            "probability, the predicted class's probability, or the value).",
        ]
    return "\n".join(lines) + "\n"


def _attributions_csv(path: Path, result: Explanation) -> None:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    records = result.attribution_rows()
    table = pa.Table.from_pylist(records)
    pa_csv.write_csv(table, path)


def write_explanation(result: Explanation, *, run: runs.Run, data_name: str) -> Path:
    """Writes `explanations/<data-name>-<time>/` into the run and returns its path."""
    final = dated_folder(run.file(runs.EXPLANATIONS), data_name)
    with files.atomic_directory(final) as folder:
        folder.chmod(0o755)  # mkdtemp's 0700 would hide the explanation from a team's readers
        _chart(folder / CHART, result)
        if result.attributions is not None:
            _attributions_csv(folder / ATTRIBUTIONS, result)
        files.write_text(folder / REPORT, markdown_report(result))
        record = result.as_dict()
        record["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record["folder"] = str(final)
        files.write_json(folder / IMPORTANCE, record)
    return final
