"""`mlcli predict --ray` against the local `mlcli predict`: the same run, the same files, one host.

Generates Adult-like CSV parts (`predict_bench.generate`: rows drawn with replacement from
examples/adult/adult.data, as UCI writes them) into one folder, then, each in its own
subprocess and in this order:

1. local:      `python -m mlcli predict RUN --data PARTS --output local.parquet`
2. ray-empty:  `python -m mlcli predict RUN --data ONE-ROW --output DIR --ray`: the fixed cost
               of starting a local Ray, the actor pool and its actors' run loading
3. ray:        `python -m mlcli predict RUN --data PARTS --output DIR --ray [--actors N]`

and prints each one's wall seconds and rows/s, the ratio ray/local, and the per-actor rows/s
once the fixed cost is taken off ((rows) / (ray seconds - fixed seconds) / actors), which the
paper estimate of N hosts in benchmarks/README.md starts from.

Usage (the run is the Adult example's; generated files go under --workdir, never the repo):

    python -m mlcli train examples/adult/config.yaml --output /tmp/rp-runs --quiet
    python benchmarks/ray_predict_bench.py --run /tmp/rp-runs/adult-income/latest --rows 4000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import run_measured
from predict_bench import generate


def _events(stderr: str) -> dict[str, dict]:
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return {event["event"]: event for event in events if "event" in event}


def predict(run: Path, data: Path, output: Path, *ray: str) -> dict[str, float]:
    """One `mlcli predict` in a child process: wall seconds, and its events' figures."""
    if output.is_dir():
        shutil.rmtree(output)
    output.unlink(missing_ok=True)
    output.with_name(output.name + ".drift.json").unlink(missing_ok=True)  # local predict's
    command = [sys.executable, "-m", "mlcli", "predict", str(run), "--data", str(data)]
    command += ["--output", str(output), "--log-format", "json", *ray]
    started = time.monotonic()
    cost, stderr = run_measured(command)
    wall = time.monotonic() - started
    events = _events(stderr)
    result = {"wall": wall, "cpu": cost["cpu"], "rows": events["predicted"]["rows"]}
    result["work"] = events["predicted"]["seconds"]
    if "ray" in events:
        result["startup"] = events["ray"]["seconds"]
        result["actors"] = events["ray"]["actors"]
    return result


def parts(rows: int, count: int, folder: Path) -> Path:
    """`count` Adult-like CSV parts of `rows / count` rows each in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        generate(rows // count, folder / f"adult-{rows // count}-{index}.csv", seed=index)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--actors", type=int, default=None, help="default: the CPUs but one")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlcli-ray-bench"))
    args = parser.parse_args()
    work = args.workdir
    data = parts(args.rows, args.parts, work / f"adult-{args.rows}")
    one = parts(args.parts, args.parts, work / "adult-tiny")
    ray = ["--ray"] + ([f"--actors={args.actors}"] if args.actors else [])
    # the run's core.onnx is written on first use: not timed
    predict(args.run, one, work / "warm-up.parquet")
    local = predict(args.run, data, work / "local.parquet")
    empty = predict(args.run, one, work / "ray-tiny", *ray)
    distributed = predict(args.run, data, work / "ray-out", *ray)
    rows = local["rows"]
    assert distributed["rows"] == rows, (distributed["rows"], rows)
    fixed = empty["work"]  # connecting (starting Ray), the pool, its actors loading the run
    actors = int(distributed["actors"])
    # the pipeline alone (after Ray is up), less the tiny input's: rows through the actors
    pipeline = (distributed["work"] - distributed["startup"]) - (empty["work"] - empty["startup"])
    per_actor = rows / pipeline / actors if pipeline > 0 else float("nan")
    print(f"{'':24} {'wall s':>8} {'work s':>8} {'rows/s':>10}")
    for name, figures in (("local predict", local), ("ray, 4 rows", empty), ("ray", distributed)):
        rate = figures["rows"] / figures["wall"]
        print(f"{name:24} {figures['wall']:8.1f} {figures['work']:8.1f} {rate:10.0f}")
    print(f"rows: {rows}; ray/local rows/s (wall): {local['wall'] / distributed['wall']:.2f}")
    print(f"fixed cost of --ray (Ray start {empty['startup']:.1f}s, pool, 4 rows): {fixed:.1f}s")
    print(f"pipeline seconds past the fixed cost: {pipeline:.1f}")
    print(f"actors: {actors}; rows/s per actor after the fixed cost: {per_actor:.0f}")
    print(
        json.dumps(
            {
                "local": local,
                "ray_tiny": empty,
                "ray": distributed,
                "fixed_seconds": fixed,
                "per_actor_rows_per_s": per_actor,
            }
        )
    )


if __name__ == "__main__":
    main()
