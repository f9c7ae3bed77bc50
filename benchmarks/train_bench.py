"""Training end to end on a 1,000,000-row Adult-like CSV: mlcli against two hand-written recipes.

Every contender reads the same CSV from disk, holds out 10% for validation, fits the same MLP
(128-64, ReLU, Adam 1e-3, batch 256, 2 epochs, no early stopping, no schedule) and saves a
model that takes raw column values, each in its own subprocess, one after the other in the same
run (interleaved when repeated), so that the ratios compare like with like on a busy machine:

- mlcli:       `python -m mlcli train CONFIG --quiet` (run directory, metrics and plots included)
- textbook:    pandas.read_csv -> get_dummies -> normalise -> numpy -> model.fit -> save
               (Keras's defaults otherwise: one batch per compiled call)
- handwritten: pyarrow read -> Keras preprocessing layers (StringLookup, Normalization) in a
               tf.data map, encoded once -> model.fit on the dense arrays -> save the layers
               composed with the model; 32 batches per compiled call, as mlcli

Usage (the data is generated under --workdir, never in the repository):

    python benchmarks/train_bench.py [--rows 1000000] [--repeats 1] [--workdir /tmp/mlcli_bench]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adult_like import CATEGORICAL, NUMERIC, write_csv
from child import run_measured

FEATURES_NUMERIC = [c for c in NUMERIC if c != "fnlwgt"]
FEATURES_CATEGORICAL = [c for c in CATEGORICAL if c != "education"]
COMMON = f"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
CSV, OUT = sys.argv[1], sys.argv[2]
NUMERIC, CATEGORICAL = {FEATURES_NUMERIC!r}, {FEATURES_CATEGORICAL!r}

def mlp(inputs, x, steps_per_execution):
    import keras
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model
"""

TEXTBOOK = (
    COMMON
    + """
import numpy as np, pandas as pd, keras
frame = pd.read_csv(CSV)
y = (frame.pop("income") == ">50K").to_numpy(np.float32)
numbers = frame[NUMERIC].astype("float32")
numbers = ((numbers - numbers.mean()) / numbers.std()).fillna(0.0)
dummies = pd.get_dummies(frame[CATEGORICAL], dtype="float32")
x = np.concatenate([numbers.to_numpy(np.float32), dummies.to_numpy(np.float32)], axis=1)
inputs = keras.Input(shape=(x.shape[1],))
model = mlp(inputs, inputs, 1)  # Keras's default: one batch per call
model.fit(x, y, batch_size=256, epochs=2, validation_split=0.1, shuffle=True, verbose=0)
model.save(OUT + "/textbook.keras")
"""
)

HANDWRITTEN = (
    COMMON
    + """
import numpy as np, pyarrow.compute as pc, pyarrow.csv as pa_csv, keras, tensorflow as tf
table = pa_csv.read_csv(CSV)
y = pc.equal(table["income"], ">50K").to_numpy(zero_copy_only=False).astype(np.float32)
columns = {}
for name in NUMERIC:
    columns[name] = pc.cast(table[name], "float32").to_numpy(zero_copy_only=False).reshape(-1, 1)
for name in CATEGORICAL:
    values = pc.fill_null(table[name], "").to_numpy(zero_copy_only=False).astype(object)
    columns[name] = values.reshape(-1, 1)
cut = int(len(y) * 0.9)
inputs, encoded = {}, []
for name in NUMERIC:
    inputs[name] = keras.Input(shape=(1,), name=name)
    layer = keras.layers.Normalization()
    layer.adapt(np.nan_to_num(columns[name][:cut]))
    encoded.append(layer(keras.ops.where(keras.ops.isnan(inputs[name]), 0.0, inputs[name])))
for name in CATEGORICAL:
    inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
    layer = keras.layers.StringLookup(output_mode="one_hot")
    layer.adapt(columns[name][:cut].ravel())
    encoded.append(keras.ops.reshape(layer(inputs[name]), (-1, layer.vocabulary_size())))
preprocess = keras.Model(inputs, keras.layers.Concatenate()(encoded))
dataset = tf.data.Dataset.from_tensor_slices(columns).batch(65536)
dense = np.concatenate([preprocess(batch).numpy() for batch in dataset.prefetch(2)])
core_in = keras.Input(shape=(dense.shape[1],))
core = mlp(core_in, core_in, 32)  # as mlcli's default
core.fit(dense[:cut], y[:cut], batch_size=256, epochs=2, shuffle=True, verbose=0,
         validation_data=(dense[cut:], y[cut:]))
keras.Model(inputs, core(preprocess(inputs))).save(OUT + "/handwritten.keras")
"""
)


def mlcli_config(csv: Path, workdir: Path) -> Path:
    """The same MLP and training as the recipes, in an mlcli config."""
    config = {
        "name": "train-bench",
        "seed": 1,
        "data": {"train": str(csv), "validation": 0.1},
        "target": {"column": "income", "task": "binary", "positive_class": ">50K"},
        "features": {"exclude": ["fnlwgt", "education"]},
        "model": {"hidden_units": [128, 64], "dropout": 0.0},
        "training": {
            "epochs": 2,
            "batch_size": 256,
            "optimizer": "adam",
            "weight_decay": 0.0,
            "learning_rate": 0.001,
            "learning_rate_schedule": "none",
            "early_stopping": None,
        },
        "output": {"dir": str(workdir / "runs")},
    }
    path = workdir / "train_bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def measure(command: list[str]) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of a child process."""
    return run_measured(command)[0]


def main() -> None:
    """Generates the table, runs every contender, prints times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlcli_bench"))
    arguments = parser.parse_args()
    workdir = arguments.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    csv = write_csv(arguments.rows, workdir / f"adult_{arguments.rows}.csv")
    python = sys.executable
    commands = {
        "mlcli": [python, "-m", "mlcli", "train", str(mlcli_config(csv, workdir)), "--quiet"],
        "textbook": [python, "-c", TEXTBOOK, str(csv), str(workdir)],
        "handwritten": [python, "-c", HANDWRITTEN, str(csv), str(workdir)],
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    print(f"{arguments.rows} rows, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    for repeat in range(arguments.repeats):
        order = list(commands) if repeat % 2 == 0 else list(reversed(commands))
        for name in order:
            results[name].append(measure(commands[name]))
            last = results[name][-1]
            print(
                f"  {name:<12} wall {last['wall']:6.1f} s  cpu {last['cpu']:6.1f} s  "
                f"peak RSS {last['rss_mib']:6.0f} MiB",
                flush=True,
            )
    wall = {name: statistics.median(r["wall"] for r in runs) for name, runs in results.items()}
    print("median wall: " + ", ".join(f"{n} {s:.1f} s" for n, s in wall.items()))
    print(f"mlcli speed vs textbook:    {wall['textbook'] / wall['mlcli']:.2f}x (target >= 1.5x)")
    print(
        f"mlcli speed vs handwritten: {wall['handwritten'] / wall['mlcli']:.2f}x (target >= 0.9x)"
    )


if __name__ == "__main__":
    main()
