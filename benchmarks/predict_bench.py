"""Batch prediction at scale: `mlcli predict` against two pandas recipes, same run, same data.

Generates Adult-like CSVs (rows drawn with replacement from examples/adult/adult.data, written
exactly as UCI publishes them: no header, ", " separators, "?" for missing values), then times
each contender in its own subprocess and reads that child's peak RSS from `os.wait4`:

- mlcli:     `python -m mlcli predict RUN --data big.csv --output out.csv`
- naive:     `pandas.read_csv` -> `model.predict(batch_size=65536)` (a dict of tf tensors) ->
             `DataFrame.to_csv`
- textbook:  `pandas.read_csv` -> `model.predict` on a dict of the frame's columns with Keras's
             default batch size -> `DataFrame.to_csv`, as tutorials write it

Usage (the run is the Adult example's; generated files go under --workdir, never the repo):

    python -m mlcli train examples/adult/config.yaml --quiet
    python benchmarks/predict_bench.py --run runs/adult-income/latest --rows 1000000 4000000
    python benchmarks/predict_bench.py --rows 1000000 --repeats 3   # medians of 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import run_measured

REPO = Path(__file__).resolve().parents[1]
ADULT = REPO / "examples" / "adult" / "adult.data"
# The naive recipe's model.predict batch: the same as mlcli's default, so that the model's own
# work is the same and the comparison measures reading, converting and writing.
NAIVE_BATCH = 65536
CONTENDERS = ("mlcli", "mlcli-keras", "naive", "textbook")
# mlcli's light path (ONNX Runtime behind the Arrow encoder) is required; mlcli-keras forces
# the Keras model (`MLCLI_INFERENCE`, docs/evaluate-and-predict.md)
INFERENCE = {"mlcli": "onnxruntime", "mlcli-keras": "keras"}


def generate(rows: int, path: Path, *, seed: int = 0) -> Path:
    """An Adult-like CSV of `rows` lines drawn with replacement from adult.data."""
    if path.exists():
        return path
    lines = [line for line in ADULT.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as handle:
        for start in range(0, rows, 200_000):
            picks = rng.integers(0, len(lines), min(200_000, rows - start))
            handle.write("\n".join(lines[i] for i in picks) + "\n")
    partial.rename(path)
    return path


def warm_up(run: Path, workdir: Path) -> None:
    """One small predict, so that the run's core.onnx (written on first use) is not timed."""
    data = generate(1000, workdir / "adult-1000.csv")
    command = [sys.executable, "-m", "mlcli", "predict", str(run), "--data", str(data)]
    _, stderr = run_measured([*command, "--force", "--output", str(workdir / "warm-up.csv")])
    print(f"warm-up: {stderr.splitlines()[0]}", file=sys.stderr)


def measure(command: list[str]) -> dict[str, float]:
    """Wall and CPU seconds, peak RSS (MiB) and the seconds from first read to last write."""
    cost, stderr = run_measured(command)
    work = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    event = next(r for r in work if r.get("event") == "predicted")
    return {
        "seconds": cost["wall"],
        "cpu_seconds": cost["cpu"],
        "peak_rss_mib": cost["rss_mib"],
        "work_seconds": event["seconds"],
        "work_cpu_seconds": event["cpu_seconds"],
    }


def naive(run: Path, data: Path, output: Path) -> None:
    """The recipe people write first: the whole table in pandas, one predict, one to_csv."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import pandas as pd
    import tensorflow as tf

    from mlcli.runs.loading import load_model

    schema = json.loads((run / "schema.json").read_text())
    columns = _adult_columns(run)
    model = load_model(run / "model.keras")
    started, cpu_started = time.monotonic(), time.process_time()
    frame = pd.read_csv(data, header=None, names=columns, skipinitialspace=True, na_values=["?"])
    inputs = {}
    for column in schema["columns"]:
        values = frame[column["name"]]
        if column["dtype"] == "string":
            array = values.fillna("").astype(str).to_numpy().reshape(-1, 1)
        else:
            array = values.to_numpy(dtype=column["dtype"]).reshape(-1, 1)
        inputs[column["name"]] = tf.constant(array, dtype=column["dtype"])
    probability = model.predict(inputs, batch_size=NAIVE_BATCH, verbose=0).reshape(-1)
    _write_and_report(probability, schema, output, started, cpu_started)


def textbook(run: Path, data: Path, output: Path) -> None:
    """The tutorial recipe: pandas in, the model on a dict of columns at Keras's default batch.

    `pd.get_dummies` is what a tutorial applies when the model takes encoded inputs; a run's
    model takes the raw columns (its preprocessing is inside), so the frame's columns go in as
    they are, as NumPy arrays, and `model.predict` batches them itself (32 rows a batch).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import pandas as pd

    from mlcli.runs.loading import load_model

    schema = json.loads((run / "schema.json").read_text())
    model = load_model(run / "model.keras")
    started, cpu_started = time.monotonic(), time.process_time()
    frame = pd.read_csv(
        data, header=None, names=_adult_columns(run), skipinitialspace=True, na_values=["?"]
    )
    inputs = {
        column["name"]: (
            frame[column["name"]].fillna("").astype(str)
            if column["dtype"] == "string"
            else frame[column["name"]].astype(column["dtype"])
        ).to_numpy()
        for column in schema["columns"]
    }
    probability = model.predict(inputs, verbose=0).reshape(-1)
    _write_and_report(probability, schema, output, started, cpu_started)


def _write_and_report(
    probability: np.ndarray, schema: dict, output: Path, started: float, cpu_started: float
) -> None:
    import pandas as pd

    classes = np.asarray(schema["target"]["classes"], dtype=object)
    pd.DataFrame(
        {"prediction": classes[(probability > 0.5).astype(int)], "probability": probability}
    ).to_csv(output, index=False)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu_started
    print(
        json.dumps({"event": "predicted", "seconds": seconds, "cpu_seconds": cpu}), file=sys.stderr
    )


def _adult_columns(run: Path) -> list[str]:
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    return list(config["data"]["csv"]["columns"])


def _agreement(mlcli_output: Path, other_output: Path, rows: int = 100_000) -> float:
    import pandas as pd

    ours = pd.read_csv(mlcli_output, nrows=rows).iloc[:, -1].to_numpy()
    other = pd.read_csv(other_output, nrows=rows)
    theirs = (other["probability"] if "probability" in other else other.iloc[:, -1]).to_numpy()
    return float(np.max(np.abs(ours - theirs)))


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


def main() -> None:
    """Runs every contender on each size (median of `--repeats`) and prints a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "adult-income" / "latest")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlcli-predict-bench"))
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; medians shown")
    parser.add_argument("--child", nargs=4, metavar=("RECIPE", "RUN", "DATA", "OUTPUT"))
    args = parser.parse_args()
    if args.child:
        recipe = {"naive": naive, "textbook": textbook}[args.child[0]]
        recipe(*(Path(p) for p in args.child[1:]))
        return
    run = args.run.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        "| rows | contender | read→write s | rows/s | read→write CPU s | rows/CPU s "
        "| total wall s | total CPU s | peak RSS MiB |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    results: dict[tuple[int, str], dict[str, float]] = {}
    differences: dict[tuple[int, str], float] = {}
    for rows in args.rows:
        data = generate(rows, args.workdir / f"adult-{rows}.csv")
        outputs = {name: args.workdir / f"out-{name}-{rows}.csv" for name in args.contenders}
        commands = {}
        for name in args.contenders:
            if name in INFERENCE:
                command = ["-m", "mlcli", "predict", str(run), "--data", str(data), "--force"]
                command += ["--log-format", "json", "--output", str(outputs[name])]
                environment = f"MLCLI_INFERENCE={INFERENCE[name]}"
                commands[name] = ["env", environment, sys.executable, *command]
            else:
                command = [__file__, "--child", name, str(run), str(data), str(outputs[name])]
                commands[name] = [sys.executable, *command]
        if "mlcli" in commands and rows == args.rows[0]:
            warm_up(run, args.workdir)
        timed: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():  # interleaved: the load is shared alike
                timed[name].append(measure(command))
        for name in commands:
            result = results[rows, name] = _median(timed[name])
            print(
                f"| {rows:,} | {name} | {result['work_seconds']:.1f} | "
                f"{rows / result['work_seconds']:,.0f} | {result['work_cpu_seconds']:.1f} | "
                f"{rows / result['work_cpu_seconds']:,.0f} | {result['seconds']:.1f} | "
                f"{result['cpu_seconds']:.1f} | {result['peak_rss_mib']:,.0f} |",
                flush=True,
            )
        if "mlcli" in outputs:
            for name in outputs.keys() - {"mlcli"}:
                differences[rows, name] = _agreement(outputs["mlcli"], outputs[name])
    print()
    for (rows, name), difference in sorted(differences.items()):
        ours, theirs = results[rows, "mlcli"], results[rows, name]
        print(
            f"{rows:,} rows, {name}/mlcli: {theirs['seconds'] / ours['seconds']:.2f}x the wall "
            f"seconds, {theirs['peak_rss_mib'] / ours['peak_rss_mib']:.2f}x the peak RSS "
            f"(read→write {theirs['work_seconds'] / ours['work_seconds']:.2f}x, per CPU second "
            f"{theirs['work_cpu_seconds'] / ours['work_cpu_seconds']:.2f}x); max abs "
            f"probability difference on the first 100k rows: {difference:.1e}"
        )
    if len(args.rows) > 1 and "mlcli" in args.contenders:
        small, large = min(args.rows), max(args.rows)
        ratio = results[large, "mlcli"]["peak_rss_mib"] / results[small, "mlcli"]["peak_rss_mib"]
        print(f"mlcli peak RSS at {large:,} rows / at {small:,} rows: {ratio:.2f}x")


if __name__ == "__main__":
    main()
