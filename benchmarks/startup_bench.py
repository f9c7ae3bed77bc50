"""Start-up: `mlcli --help` and `mlcli validate` (median of 5), beside a bare interpreter.

Each command runs as a fresh subprocess; wall and CPU seconds come from `os.wait4`. A check in
the same run confirms that neither command imports TensorFlow (nor pandas, for validate).
Targets: `--help` under 0.3 s, `validate examples/adult/config.yaml` under 1.5 s.

Usage:

    python benchmarks/startup_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import measure

REPO = Path(__file__).resolve().parents[1]
ADULT = str(REPO / "examples" / "adult" / "config.yaml")
IMPORTED = """
import sys
sys.argv = ["mlcli", *sys.argv[1:]]
from mlcli.cli.app import main
try:
    main()
except SystemExit:
    pass
print(" ".join(m for m in ("tensorflow", "keras", "pandas") if m in sys.modules), file=sys.stderr)
"""


def heavy_imports(*arguments: str) -> str:
    """The heavy modules a command imported."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED, *arguments], capture_output=True, text=True, cwd=REPO
    )
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def main() -> None:
    """Times each command `--runs` times and prints the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mlcli --help": [sys.executable, "-m", "mlcli", "--help"],
        "mlcli validate": [sys.executable, "-m", "mlcli", "validate", ADULT, "--quiet"],
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    for _ in range(arguments.runs):
        for name, command in commands.items():  # interleaved: the load is shared alike
            results[name].append(measure(command))
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        print(f"{name:<16} median wall {wall:.3f} s, cpu {cpu:.3f} s ({arguments.runs} runs)")
    print(f"imported by --help:   [{heavy_imports('--help')}]")
    print(f"imported by validate: [{heavy_imports('validate', ADULT, '--quiet')}]")


if __name__ == "__main__":
    main()
