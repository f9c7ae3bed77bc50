"""`mlcli explain`: which raw columns a run's model relies on, measured on labelled data.

Each raw column's values are shuffled across the rows, `repeats` times, and the run's metric
is measured again through the run's own predictor (`mlcli.inference.predictor`): the column's
importance is how much worse the metric got (`mlcli.evaluation.importance`). The metric is the
one the run was trained to lower: `log_loss` for classification, `rmse` for regression, or any
metric `mlcli evaluate` reports (`metric=`). With `rows=N`, the first N rows of the data are
also explained one by one with SHAP (`mlcli.evaluation.attributions`, the `explain` extra).
The result is written to `explanations/<data>-<time>/` in the run
(`mlcli.evaluation.explanation`).

```python
result = mlcli.explain("runs/adult-income", data="adult.test")
[(item.column, item.mean, item.std) for item in result.importances]
```
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from mlcli.errors import ConfigError, DataError
from mlcli.evaluation.evaluate import labelled_rows
from mlcli.evaluation.explanation import Explanation, write_explanation
from mlcli.evaluation.importance import permutation_importances
from mlcli.evaluation.metrics import LOWER_IS_BETTER, compute_metrics, metric_names
from mlcli.features.schema import FeatureSchema
from mlcli.inference.labels import decision_threshold
from mlcli.reporting import QuietReporter, Reporter
from mlcli.runs import directory as runs
from mlcli.runs.loading import LoadedRun, load_model, open_run

# Enough rows for a stable ranking, few enough that every shuffle takes a fraction of a second
DEFAULT_SAMPLE_ROWS = 2000
DEFAULT_REPEATS = 5
# The loss each task trains on (RMSE in the unit of the target for regression)
DEFAULT_METRIC = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}


def _check_options(*, rows: int, sample: int, repeats: int) -> None:
    if rows < 0:
        raise ConfigError(f"--rows: expected a number of rows to explain, 0 or more; found {rows}")
    if sample < 1:
        raise ConfigError(f"--sample: expected a number of rows, 1 or more; found {sample}")
    if repeats < 1:
        raise ConfigError(f"--repeats: expected 1 or more shuffles per column; found {repeats}")


def _chosen_metric(metric: str | None, schema: FeatureSchema) -> str:
    chosen = metric or DEFAULT_METRIC[schema.target.task]
    valid = metric_names(schema)
    if chosen not in valid:
        raise ConfigError(
            f"--metric {chosen!r}: a {schema.target.task} run has no such metric; "
            f"valid metrics: {', '.join(valid)}"
        )
    return chosen


def _sampled(
    table: pa.Table, labels: np.ndarray, *, sample: int, rng: np.random.Generator
) -> tuple[pa.Table, np.ndarray]:
    """At most `sample` of the rows, drawn without replacement, in their order in the data."""
    if table.num_rows <= sample:
        return table, labels
    chosen = np.sort(rng.choice(table.num_rows, size=sample, replace=False))
    return table.take(pa.array(chosen)), labels[chosen]


def _open(reference: str | Path, metric: str | None) -> tuple[LoadedRun, str]:
    loaded = open_run(reference, with_model=False)
    chosen = _chosen_metric(metric, loaded.schema)
    return loaded, chosen


def explain(
    run: str | Path,
    *,
    data: str | Path,
    rows: int = 0,
    sample: int = DEFAULT_SAMPLE_ROWS,
    repeats: int = DEFAULT_REPEATS,
    metric: str | None = None,
    seed: int | None = None,
    csv_overrides: Mapping[str, Any] | None = None,
    stdin: BinaryIO | None = None,
    reporter: Reporter | None = None,
) -> Explanation:
    """Permutation importance of each raw column on `data`, written to `explanations/`.

    Args:
        run: a run directory, or a run name (its latest run).
        data: a labelled table (file, glob or folder; `-` reads CSV from `stdin`).
        rows: explain the first `rows` rows of `data` one by one with SHAP (the `explain`
            extra); 0 explains none.
        sample: measure on at most this many labelled rows, drawn at random with `seed`.
        repeats: shuffles of each column; the spread is their standard deviation.
        metric: the metric to worsen; the task's loss (`log_loss` or `rmse`) by default.
        seed: seeds the sample and the shuffles; the run's own seed by default.
        csv_overrides: CSV options from the command line (`delimiter`, `skip_rows`, `header`).
        stdin: the stream that `data="-"` reads.
        reporter: where progress goes.
    """
    from mlcli.data.columns import check_numbers
    from mlcli.data.sources import source_for_run
    from mlcli.data.tables import check_header, read_table
    from mlcli.evaluation.attributions import import_shap

    reporter = reporter or QuietReporter()
    _check_options(rows=rows, sample=sample, repeats=repeats)
    if rows:
        import_shap()  # a missing extra fails now, not after the importances
    loaded, chosen = _open(run, metric)
    schema = loaded.schema
    seed = loaded.config.seed if seed is None else seed
    names = [*schema.input_names, schema.target.column]
    source = source_for_run(
        loaded.config, data, names=names, csv_overrides=csv_overrides, stdin=stdin
    )
    check_header(source, names)  # every argument, path and the header before TensorFlow
    loaded.model = load_model(loaded.run.file(runs.MODEL))
    described = source.describe()
    started = time.monotonic()
    table = read_table(source)
    # before sampling, so that a number the model cannot take is named by its row in the file
    numbers = [column.name for column in schema.columns if column.dtype == "float32"]
    check_numbers(table, numbers, source=described)
    labelled, labels = labelled_rows(table, loaded, source=described)
    rng = np.random.default_rng(seed)
    labelled, labels = _sampled(labelled, labels, sample=sample, rng=rng)
    inputs = labelled.select(schema.input_names)
    reporter.event("data", f"{inputs.num_rows} labelled rows of {table.num_rows} used")
    from mlcli.inference.predictor import Predictor

    predictor = Predictor(loaded.model, schema)
    sign = -1.0 if chosen in LOWER_IS_BETTER else 1.0
    threshold = decision_threshold(None, loaded.threshold)  # the run's saved one, else 0.5

    def score(permuted: pa.Table) -> float:
        outputs = predictor.outputs(permuted, source=described)
        found = compute_metrics(labels, outputs, schema, threshold=threshold).get(chosen)
        if found is None:
            raise DataError(
                f"{described}: {chosen} is undefined on these {inputs.num_rows} rows "
                "(one class only?); choose another --metric or more rows"
            )
        reporter.advance()
        return sign * found

    reporter.start_progress("permutation importance", total=inputs.num_columns * repeats + 2)
    try:
        baseline, importances = permutation_importances(score, inputs, repeats=repeats, seed=seed)
    finally:
        reporter.stop_progress()
    result = Explanation(
        run=loaded.run.path,
        data=described,
        task=schema.target.task,
        metric=chosen,
        lower_is_better=chosen in LOWER_IS_BETTER,
        baseline=sign * baseline,
        rows=inputs.num_rows,
        repeats=repeats,
        seed=seed,
        importances=importances,
        classes=list(schema.target.classes),
    )
    seconds = time.monotonic() - started
    reporter.event("importance", f"{inputs.num_columns} columns in {seconds:.1f}s")
    if rows:
        _attribute(result, predictor, table, inputs, rows=rows, rng=rng, reporter=reporter)
    result.folder = write_explanation(result, run=loaded.run, data_name=source.name)
    return result


def _attribute(
    result: Explanation,
    predictor: Any,
    table: pa.Table,
    inputs: pa.Table,
    *,
    rows: int,
    rng: np.random.Generator,
    reporter: Reporter,
) -> None:
    """SHAP values of the first `rows` rows of the data, against background rows of `inputs`."""
    from mlcli.evaluation.attributions import BACKGROUND_ROWS, row_attributions

    started = time.monotonic()
    explained = table.select(inputs.column_names).slice(0, rows)
    chosen = rng.choice(inputs.num_rows, size=min(BACKGROUND_ROWS, inputs.num_rows), replace=False)
    background = inputs.take(pa.array(np.sort(chosen)))

    def outputs(permuted: pa.Table) -> np.ndarray:
        return predictor.outputs(permuted, source=result.data)

    result.attributions = row_attributions(
        outputs, explained, background, seed=int(rng.integers(2**31))
    )
    result.attributed_rows = list(range(explained.num_rows))
    reporter.event(
        "attributions", f"{explained.num_rows} rows in {time.monotonic() - started:.1f}s"
    )
