"""Model quality: mlcli's shipped configs against LightGBM with default settings, same splits.

For every config and seed, `mlcli.train` trains the config (`seed=<seed>`), then LightGBM
(`LGBMClassifier`/`LGBMRegressor` with default settings, `random_state=<seed>`) trains on the
very same training split that mlcli read and split (`mlcli.data.splits.load_splits`), with the same
feature columns (categories as pandas categoricals), and both are scored on the same test split.
Prints one row per config and model: the test metric's mean and standard deviation over the
seeds, and the mean training seconds. LightGBM is only this benchmark's requirement
(benchmarks/requirements.txt), not mlcli's.

    python benchmarks/quality_bench.py [CONFIG ...] [--seeds 42 43 44] [--json results.json]

Timings depend on the machine's load; on a shared machine, say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [
    REPO / "examples" / "adult" / "config.yaml",
    REPO / "examples" / "california_housing" / "config.yaml",
]


def _frame(table: Any, schema: Any, categories: dict[str, list[Any]]) -> pd.DataFrame:
    """The schema's input columns: numbers as floats, everything else as pandas categoricals."""
    from mlcli.data.columns import numeric_values

    columns: dict[str, Any] = {}
    for column in schema.columns:
        values = table.column(column.name)
        if column.type == "numeric":
            columns[column.name] = numeric_values(values, column.name).to_numpy()
        else:
            text = pd.Series(values.to_pylist(), dtype="object").astype("string")
            columns[column.name] = pd.Categorical(text, categories=categories[column.name])
    return pd.DataFrame(columns)


def lightgbm_score(config_path: Path, seed: int) -> tuple[str, float, float]:
    """LightGBM with default settings on the config's own splits: (metric, test score, seconds)."""
    import lightgbm

    from mlcli.config.loading import load_config
    from mlcli.data.splits import load_splits
    from mlcli.features.build import encode_labels
    from mlcli.training.data import prepare_schema

    config = load_config(config_path, overrides=[f"seed={seed}"])
    splits = load_splits(config)
    if splits.test is None:
        raise SystemExit(f"{config_path}: the benchmark needs data.test")
    schema = prepare_schema(config, splits)
    categories = {
        c.name: sorted({str(v) for v in splits.train.column(c.name).drop_null().to_pylist()})
        for c in schema.columns
        if c.type != "numeric"
    }
    x_train = _frame(splits.train, schema, categories)
    x_test = _frame(splits.test, schema, categories)
    target = schema.target
    y_train = encode_labels(splits.train.column(target.column), target, source="train")
    y_test = encode_labels(splits.test.column(target.column), target, source="test")
    started = time.perf_counter()
    if target.task == "regression":
        model = lightgbm.LGBMRegressor(random_state=seed, verbose=-1)
    else:
        model = lightgbm.LGBMClassifier(random_state=seed, verbose=-1)
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    predicted = model.predict(x_test)
    if target.task == "regression":
        return "rmse", float(np.sqrt(np.mean((predicted - y_test) ** 2))), seconds
    return "accuracy", float(np.mean(predicted == y_test)), seconds


def mlcli_score(config_path: Path, seed: int, output: Path) -> tuple[str, float, float]:
    """mlcli's config trained with `seed`: (metric, test score, training seconds)."""
    import mlcli

    started = time.perf_counter()
    run = mlcli.train(config_path, overrides=[f"seed={seed}"], output_dir=output)
    seconds = time.perf_counter() - started
    metrics = json.loads((Path(run) / "metrics.json").read_text())["test"]
    metric = "rmse" if "rmse" in metrics else "accuracy"
    return metric, float(metrics[metric]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, default=DEFAULT_CONFIGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--skip-mlcli", action="store_true", help="Only LightGBM (quick check).")
    parser.add_argument("--json", type=Path, help="Also write every score to this file.")
    args = parser.parse_args()

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    rows: list[dict[str, Any]] = []
    models = ["lightgbm (default)"] if args.skip_mlcli else ["mlcli", "lightgbm (default)"]
    with tempfile.TemporaryDirectory() as scratch:
        for config_path in args.configs:
            for seed in args.seeds:
                for name in models:
                    if name == "mlcli":
                        metric, value, seconds = mlcli_score(config_path, seed, Path(scratch))
                    else:
                        metric, value, seconds = lightgbm_score(config_path, seed)
                    row = {"config": str(config_path), "model": name, "seed": seed}
                    rows.append({**row, "metric": metric, "test": value, "seconds": seconds})
                    label = f"{config_path.parent.name:20} {name:20} seed {seed}"
                    print(f"{label}: test {metric} {value:.4f} in {seconds:.1f}s", flush=True)
    print()
    print(f"{'config':20} {'model':20} {'metric':9} {'mean':>7} {'std':>7} {'seconds':>8}")
    for config_path in args.configs:
        for name in dict.fromkeys(r["model"] for r in rows):
            chosen = [r for r in rows if r["config"] == str(config_path) and r["model"] == name]
            if not chosen:
                continue
            values = [r["test"] for r in chosen]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            seconds = statistics.mean(r["seconds"] for r in chosen)
            label = f"{config_path.parent.name:20} {name:20} {chosen[0]['metric']:9}"
            print(f"{label} {statistics.mean(values):7.4f} {spread:7.4f} {seconds:8.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
