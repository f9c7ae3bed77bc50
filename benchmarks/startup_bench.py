"""Start-up: `mlcli --help`, `mlcli validate` and bad arguments (median of 5), beside a bare
interpreter.

Each command runs as a fresh subprocess; wall and CPU seconds come from `os.wait4`. A check in
the same run reports which heavy modules each command imported (TensorFlow, Keras, pandas).
Targets: `--help` under 0.3 s, `validate examples/adult/config.yaml` under 1.5 s, and a bad
argument to `predict` (an existing `--output`, no such run, a column missing from the data)
failing with its exit code in under 0.5 s without importing TensorFlow. The bad-argument
commands need a trained run (`--run`; skipped when it does not exist).

Usage:

    python -m mlcli train examples/adult/config.yaml --quiet
    python benchmarks/startup_bench.py [--runs 5] [--run runs/adult-income/latest]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import run_measured

REPO = Path(__file__).resolve().parents[1]
ADULT = str(REPO / "examples" / "adult" / "config.yaml")
ADULT_TEST = str(REPO / "examples" / "adult" / "adult.test")
IMPORTED = """
import sys
sys.argv = ["mlcli", *sys.argv[1:]]
from mlcli.cli.app import main
try:
    main()
except SystemExit:
    pass
heavy = [m for m in ("tensorflow", "keras", "pandas") if m in sys.modules]
print("imported:", *heavy, file=sys.stderr)
"""


def heavy_imports(*arguments: str) -> str:
    """The heavy modules a command imported."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED, *arguments], capture_output=True, text=True, cwd=REPO
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("imported:")]
    return lines[-1].removeprefix("imported:").strip() if lines else "?"


def bad_arguments(run: Path, folder: Path) -> dict[str, tuple[list[str], int]]:
    """`mlcli predict` with each bad argument, and the exit code it must end with."""
    existing, less = folder / "existing.csv", folder / "less.csv"
    existing.write_text("prediction\n1\n")
    schema = json.loads((run / "schema.json").read_text(encoding="utf-8"))
    names = [column["name"] for column in schema["columns"]][1:]  # the first one is missing
    less.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    output = str(folder / "out" / "predictions.csv")
    return {
        "predict, --output exists": (
            ["predict", str(run), "--data", ADULT_TEST, "--output", str(existing)],
            2,
        ),
        "predict, no such run": (
            ["predict", str(folder / "no-such-run"), "--data", ADULT_TEST, "--output", output],
            4,
        ),
        "predict, missing column": (
            ["predict", str(run), "--data", str(less), "--output", output],
            3,
        ),
    }


def main() -> None:
    """Times each command `--runs` times and prints the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "adult-income" / "latest")
    arguments = parser.parse_args()
    mlcli = [sys.executable, "-m", "mlcli"]
    commands: dict[str, tuple[list[str], int]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], 0),
        "mlcli --help": ([*mlcli, "--help"], 0),
        "mlcli validate": ([*mlcli, "validate", ADULT, "--quiet"], 0),
    }
    heavy = {
        "mlcli --help": heavy_imports("--help"),
        "mlcli validate": heavy_imports("validate", ADULT, "--quiet"),
    }
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as folder:
        if arguments.run.exists():
            for name, (args, code) in bad_arguments(arguments.run.resolve(), Path(folder)).items():
                commands[name] = ([*mlcli, *args, "--quiet"], code)
                heavy[name] = heavy_imports(*args, "--quiet")
        else:
            print(f"{arguments.run}: no such run; the bad-argument commands are skipped")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for _ in range(arguments.runs):
            for name, (command, code) in commands.items():  # interleaved: the load is shared
                results[name].append(run_measured(command, expect=code)[0])
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        imported = f", imported [{heavy[name]}]" if name in heavy else ""
        print(
            f"{name:<26} median wall {wall:.3f} s, cpu {cpu:.3f} s ({arguments.runs} runs)"
            f"{imported}"
        )


if __name__ == "__main__":
    main()
