"""Model quality: mlcli's shipped configs against LightGBM, default and tuned, same splits.

For every config and seed, `mlcli.train` trains the config (`seed=<seed>`), then LightGBM
(`LGBMClassifier`/`LGBMRegressor` with default settings, `random_state=<seed>`) trains on the
very same training split that mlcli read and split (`mlcli.data.splits.load_splits`), with the same
feature columns (categories as pandas categoricals), and both are scored on the same test split.
With `--tuned`, LightGBM is also tuned by Optuna (TPE, seeded) on the same validation split, with
the trial budget the shipped configs give `mlcli tune` (`--trials 10`, `TRIALS`),
early stopping on the validation split in every trial. Prints one row per config and model: the
test metric's mean and standard deviation over the seeds, and the mean training seconds, then
the published figures for the dataset. LightGBM and Optuna are only this benchmark's
requirements (benchmarks/requirements.txt), not mlcli's.

`--split published` rebuilds the splits of Gorishniy et al. (2021, 2022, 2024) with their row
counts, as their exact row indices are not shipped: Adult 26,048 train / 6,513 validation rows of
adult.data (adult.test is the test split), California 13,209 / 3,303 / 4,128 rows of all 20,640;
the rows are shuffled with `PUBLISHED_SPLIT_SEED` (the same split for every training seed) and
written to Parquet files that both mlcli and LightGBM read.

    python benchmarks/quality_bench.py [CONFIG ...] [--seeds 42 43 44] [--json results.json]
        [--split shipped|published] [--tuned] [--skip-mlcli]

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
# The published splits' row counts (train, validation, test; test None: the config's own file)
# by config name, and the seed that shuffles the rows into them.
PUBLISHED_ROWS: dict[str, tuple[int, int, int | None]] = {
    "adult-income": (26_048, 6_513, None),
    "california-housing": (13_209, 3_303, 4_128),
}
PUBLISHED_SPLIT_SEED = 0
# Published test figures (means over 15 seeds on the splits above), from the yandex-research
# `tabm`, `tabular-dl-num-embeddings` and `tabular-dl-tabr` result files as issue 20 quotes them,
# and ../shared/datasets/reference_results (Gorishniy et al. 2021).
PUBLISHED: dict[str, list[tuple[str, str]]] = {
    "adult-income": [
        ("XGBoost, tuned", "0.872-0.874"),
        ("LightGBM, tuned (2021)", "0.8723"),
        ("CatBoost, tuned", "0.871"),
        ("MLP-PLR", "0.8694-0.8714"),
        ("TabM-mini + PLE", "0.8700"),
        ("TabR", "0.870"),
    ],
    "california-housing": [
        ("CatBoost, tuned", "0.4294"),
        ("XGBoost, tuned", "0.4327"),
        ("LightGBM, tuned", "0.4352"),
        ("TabM-mini + PLE", "0.4275"),
        ("TabM + PLE", "0.4293"),
        ("MLP + tree-binned PLE", "0.4392"),
        ("MLP + PLE", "0.4530"),
    ],
}
# Optuna trials of the tuned LightGBM: the budget the shipped configs give `mlcli tune`
# (`mlcli tune examples/adult/config.yaml --trials 10`).
TRIALS = 10


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


def _lightgbm_data(config_path: Path, seed: int, overrides: list[str]) -> dict[str, Any]:
    """The config's splits as LightGBM takes them: frames, encoded labels, the task."""
    from mlcli.config.loading import load_config
    from mlcli.data.splits import load_splits
    from mlcli.features.build import encode_labels
    from mlcli.training.data import prepare_schema

    config = load_config(config_path, overrides=[*overrides, f"seed={seed}"])
    splits = load_splits(config)
    if splits.test is None:
        raise SystemExit(f"{config_path}: the benchmark needs data.test")
    schema = prepare_schema(config, splits)
    categories = {
        c.name: sorted({str(v) for v in splits.train.column(c.name).drop_null().to_pylist()})
        for c in schema.columns
        if c.type != "numeric"
    }
    target = schema.target
    found: dict[str, Any] = {"task": target.task}
    tables = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    for name, table in tables.items():
        found[f"x_{name}"] = _frame(table, schema, categories)
        found[f"y_{name}"] = encode_labels(table.column(target.column), target, source=name)
    return found


def _score(task: str, predicted: np.ndarray, truth: np.ndarray) -> tuple[str, float]:
    if task == "regression":
        return "rmse", float(np.sqrt(np.mean((predicted - truth) ** 2)))
    return "accuracy", float(np.mean(predicted == truth))


def lightgbm_score(
    config_path: Path, seed: int, overrides: list[str] | None = None
) -> tuple[str, float, float]:
    """LightGBM with default settings on the config's own splits: (metric, test score, seconds)."""
    import lightgbm

    data = _lightgbm_data(config_path, seed, overrides or [])
    started = time.perf_counter()
    kind = lightgbm.LGBMRegressor if data["task"] == "regression" else lightgbm.LGBMClassifier
    model = kind(random_state=seed, verbose=-1)
    model.fit(data["x_train"], data["y_train"])
    seconds = time.perf_counter() - started
    metric, value = _score(data["task"], model.predict(data["x_test"]), data["y_test"])
    return metric, value, seconds


def lightgbm_tuned_score(
    config_path: Path, seed: int, overrides: list[str] | None = None
) -> tuple[str, float, float]:
    """LightGBM tuned by Optuna (TPE, seeded) on the validation split, `TRIALS` trials, each
    with early stopping on that split; the best trial's model scored on the test split."""
    import lightgbm
    import optuna

    data = _lightgbm_data(config_path, seed, overrides or [])
    task = data["task"]
    kind = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
    best: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {
            "n_estimators": 1000,
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "subsample_freq": 1,
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }
        model = kind(random_state=seed, verbose=-1, **params)
        model.fit(
            data["x_train"],
            data["y_train"],
            eval_X=(data["x_validation"],),
            eval_y=(data["y_validation"],),
            callbacks=[lightgbm.early_stopping(50, verbose=False)],
        )
        _, value = _score(task, model.predict(data["x_validation"]), data["y_validation"])
        loss = value if task == "regression" else -value
        if not best or loss < best["loss"]:
            best.update(loss=loss, model=model)
        return loss

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=TRIALS)
    seconds = time.perf_counter() - started
    metric, value = _score(task, best["model"].predict(data["x_test"]), data["y_test"])
    return metric, value, seconds


def published_split_overrides(config_path: Path, folder: Path) -> list[str]:
    """Writes the published splits of the config's data as Parquet files under `folder`; the
    overrides that point the config at them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlcli.config.loading import load_config
    from mlcli.data.splits import load_splits

    config = load_config(config_path)
    counts = PUBLISHED_ROWS.get(config.name)
    if counts is None:
        raise SystemExit(f"{config_path}: no published split for {config.name!r}")
    splits = load_splits(config)
    own_test = counts[2] is None
    parts = [splits.train, splits.validation, *([] if own_test else [splits.test])]
    table = pa.concat_tables(parts)
    # a fixed order first: load_splits shuffles by the config's seed
    table = table.take(pa.array(_canonical_order(table)))
    total = sum(count for count in counts if count is not None)
    if table.num_rows != total:
        raise SystemExit(f"{config_path}: {table.num_rows} labelled rows, published {total}")
    order = np.random.default_rng(PUBLISHED_SPLIT_SEED).permutation(table.num_rows)
    train_rows, validation_rows, _ = counts
    pieces = {
        "train": table.take(pa.array(np.sort(order[:train_rows]))),
        "validation": table.take(
            pa.array(np.sort(order[train_rows : train_rows + validation_rows]))
        ),
        "test": splits.test
        if own_test
        else table.take(pa.array(np.sort(order[train_rows + validation_rows :]))),
    }
    folder.mkdir(parents=True, exist_ok=True)
    overrides = []
    for name, piece in pieces.items():
        path = folder / f"{name}.parquet"
        pq.write_table(piece, path)
        overrides.append(f"data.{name}={path}")
    return overrides


def _canonical_order(table: Any) -> np.ndarray:
    """Row positions sorted by every column's value: an order that the file alone decides."""
    frame = table.to_pandas().reset_index(drop=True)
    ordered = frame.sort_values(list(frame.columns), kind="stable", na_position="last")
    return ordered.index.to_numpy()


def mlcli_score(
    config_path: Path, seed: int, output: Path, overrides: list[str] | None = None
) -> tuple[str, float, float]:
    """mlcli's config trained with `seed`: (metric, test score, training seconds)."""
    import mlcli

    started = time.perf_counter()
    run = mlcli.train(
        config_path, overrides=[*(overrides or []), f"seed={seed}"], output_dir=output
    )
    seconds = time.perf_counter() - started
    metrics = json.loads((Path(run) / "metrics.json").read_text())["test"]
    metric = "rmse" if "rmse" in metrics else "accuracy"
    return metric, float(metrics[metric]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, default=DEFAULT_CONFIGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--skip-mlcli", action="store_true", help="Only LightGBM (quick check).")
    parser.add_argument("--tuned", action="store_true", help="Also LightGBM tuned by Optuna.")
    parser.add_argument(
        "--split",
        choices=["shipped", "published"],
        default="shipped",
        help="shipped: the configs' own splits; published: the papers' row counts.",
    )
    parser.add_argument("--json", type=Path, help="Also write every score to this file.")
    args = parser.parse_args()

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    rows: list[dict[str, Any]] = []
    models = [] if args.skip_mlcli else ["mlcli"]
    models += ["lightgbm (default)", *(["lightgbm (tuned)"] if args.tuned else [])]
    scorers = {"lightgbm (default)": lightgbm_score, "lightgbm (tuned)": lightgbm_tuned_score}
    with tempfile.TemporaryDirectory() as scratch:
        for config_path in args.configs:
            overrides: list[str] = []
            if args.split == "published":
                folder = Path(scratch) / "splits" / config_path.parent.name
                overrides = published_split_overrides(config_path, folder)
            for seed in args.seeds:
                for name in models:
                    if name == "mlcli":
                        metric, value, seconds = mlcli_score(
                            config_path, seed, Path(scratch), overrides
                        )
                    else:
                        metric, value, seconds = scorers[name](config_path, seed, overrides)
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
        _print_published(config_path)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _print_published(config_path: Path) -> None:
    """The published figures of the config's dataset (their splits: see --split published)."""
    import yaml

    name = yaml.safe_load(config_path.read_text(encoding="utf-8")).get("name", "")
    for model, figure in PUBLISHED.get(name, []):
        print(f"{config_path.parent.name:20} {'published: ' + model:31} {figure:>15}")


if __name__ == "__main__":
    main()
