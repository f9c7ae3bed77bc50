"""Memory that does not grow with the table: one epoch on 5M and 20M Adult-like rows in Parquet.

Each table is a folder of Parquet files (about 2.5M rows each) generated under --workdir; a
streamed `mlcli train` (`data.streaming: true`) runs one epoch on it in a subprocess whose peak
RSS comes from `os.wait4`. Targets: peak RSS under 2 GiB at 20M rows, and within 20% between
5M and 20M rows.

Usage:

    python benchmarks/scale_bench.py [--rows 5000000 20000000] [--workdir /tmp/mlcli_bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adult_like import write_parquet_parts
from train_bench import measure

ROWS_PER_FILE = 2_500_000
BYTES_PER_ROW = 40  # generous for Adult-like Parquet (it takes about 12)


def streamed_config(folder: Path, workdir: Path, rows: int, batch_size: int) -> Path:
    """One epoch of the Adult MLP on the streamed folder."""
    config = {
        "name": f"scale-{rows}",
        "seed": 1,
        "data": {"train": str(folder), "validation": 0.02, "streaming": True},
        "target": {"column": "income", "task": "binary", "positive_class": ">50K"},
        "features": {"exclude": ["fnlwgt", "education"]},
        "model": {"hidden_units": [128, 64]},
        "training": {"epochs": 1, "batch_size": batch_size, "early_stopping": None},
        "output": {"dir": str(workdir / "runs")},
    }
    path = workdir / f"scale_{rows}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    """Generates the tables, trains one epoch on each, prints peak RSS and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000, 20_000_000])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlcli_bench"))
    arguments = parser.parse_args()
    workdir = arguments.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    needed = sum(arguments.rows) * BYTES_PER_ROW
    free = shutil.disk_usage(workdir).free
    if free < 2 * needed:
        raise SystemExit(f"{workdir}: {free / 2**30:.1f} GiB free, want {2 * needed / 2**30:.1f}")
    peaks = {}
    for rows in arguments.rows:
        files = max(2, -(-rows // ROWS_PER_FILE))
        folder = write_parquet_parts(rows, workdir / f"parquet_{rows}", files=files)
        size = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 2**20
        config = streamed_config(folder, workdir, rows, arguments.batch_size)
        result = measure([sys.executable, "-m", "mlcli", "train", str(config), "--quiet"])
        manifest = sorted((workdir / "runs" / f"scale-{rows}").glob("2*/manifest.json"))[-1]
        seconds = json.loads(manifest.read_text())["seconds"]
        peaks[rows] = result["rss_mib"]
        print(
            f"{rows:>10} rows in {files} files ({size:.0f} MiB): wall {result['wall']:.0f} s, "
            f"peak RSS {result['rss_mib']:.0f} MiB; "
            + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
            flush=True,
        )
    if len(peaks) >= 2:
        low, high = min(peaks), max(peaks)
        change = (peaks[high] - peaks[low]) / peaks[low]
        print(f"peak RSS {high} vs {low} rows: {change:+.1%} (target within 20%)")
        print(f"peak RSS at {high} rows: {peaks[high] / 1024:.2f} GiB (target under 2 GiB)")


if __name__ == "__main__":
    main()
