"""GPU check: train the Adult example on the CPU, on the GPU in float32 and on the GPU in mixed
precision, and print training samples per second for each.

    python benchmarks/gpu_check.py        # cpu:float32, gpu:float32 and gpu:mixed_float16
    python benchmarks/gpu_check.py --epochs 5 --batch-size 4096
    python benchmarks/gpu_check.py --runs cpu:float32 gpu:mixed_bfloat16 gpu:0,1:float32

Each run is a fresh `mlcli train` process (devices are chosen before TensorFlow starts) with
early stopping off, so that every run trains the same number of epochs. Samples/s is training
rows x epochs / the manifest's `seconds.fit` (which includes each epoch's validation pass and
the first epoch's tracing). A run that cannot happen (no GPU) prints mlcli's error instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ["cpu:float32", "gpu:float32", "gpu:mixed_float16"]


def _split(run: str) -> tuple[str, str]:
    device, _, precision = run.rpartition(":")
    return device, precision


def train_once(config: Path, device: str, precision: str, args: argparse.Namespace) -> dict:
    """One `mlcli train`; returns the manifest, or {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as output:
        command = [
            sys.executable, "-m", "mlcli", "train", str(config), "--quiet",
            "--device", device, "--output", output,
            "--set", f"training.precision={precision}",
            "--set", f"training.epochs={args.epochs}",
            "--set", "training.early_stopping=null",
            "--set", "training.learning_rate_schedule=none",
        ]  # fmt: skip
        if args.batch_size:
            command += ["--set", f"training.batch_size={args.batch_size}"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
            return {"error": lines[-1]}
        run = Path(done.stdout.strip().splitlines()[-1])
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["validation"] = json.loads((run / "metrics.json").read_text())["validation"]
        return manifest


def main() -> None:
    """Runs each device:precision pair and prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples/adult/config.yaml")
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="device:precision")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="per replica")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results = []
    print(f"{'device':<10} {'precision':<16} {'samples/s':>10} {'fit s':>7} {'val acc':>8}  where")
    for run in args.runs:
        device, precision = _split(run)
        manifest = train_once(args.config, device, precision, args)
        results.append({"device": device, "precision": precision, **manifest})
        if "error" in manifest:
            print(f"{device:<10} {precision:<16} {'-':>10} {'-':>7} {'-':>8}  {manifest['error']}")
            continue
        seconds = manifest["seconds"]["fit"]
        rate = manifest["rows"]["train"] * manifest["epochs_run"] / seconds
        where = ", ".join(manifest["device"]["gpus"]) or "CPU"
        accuracy = manifest["validation"].get("accuracy", float("nan"))
        figures = f"{rate:>10.0f} {seconds:>7.1f} {accuracy:>8.4f}"
        print(f"{device:<10} {precision:<16} {figures}  {where}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
