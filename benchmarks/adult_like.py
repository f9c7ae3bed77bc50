"""Adult-like tables of any size for the benchmarks: rows of examples/adult/adult.data drawn with
replacement, numbers jittered so that the values are not mere copies. Written under /tmp (or
wherever the caller says), never into the repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
ADULT = REPO / "examples" / "adult" / "adult.data"
COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
]  # fmt: skip
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = [c for c in COLUMNS if c not in NUMERIC and c != "income"]


def adult() -> pa.Table:
    """adult.data as a typed table: numbers as float64, '?' as missing, spaces trimmed."""
    table = pa_csv.read_csv(
        ADULT,
        read_options=pa_csv.ReadOptions(column_names=COLUMNS),
        convert_options=pa_csv.ConvertOptions(
            null_values=["?", " ?"], strings_can_be_null=True,
            column_types={name: pa.float64() for name in NUMERIC},
        ),
    )  # fmt: skip
    columns = {
        name: pc.utf8_trim_whitespace(table[name]) if name not in NUMERIC else table[name]
        for name in COLUMNS
    }
    return pa.table(columns)


def sample(rows: int, *, seed: int, base: pa.Table | None = None) -> pa.Table:
    """`rows` rows drawn with replacement from Adult, ages and hours jittered by +-2."""
    base = base if base is not None else adult()
    rng = np.random.default_rng(seed)
    table = base.take(pa.array(rng.integers(0, base.num_rows, rows)))
    for name in ("age", "hours-per-week"):
        jitter = rng.integers(-2, 3, rows).astype(np.float64)
        values = np.clip(table[name].to_numpy() + jitter, 1, 99)
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    weights = table["fnlwgt"].to_numpy() * rng.uniform(0.9, 1.1, rows)
    return table.set_column(table.column_names.index("fnlwgt"), "fnlwgt", pa.array(weights))


def write_csv(rows: int, path: Path, *, seed: int = 0) -> Path:
    """A CSV with a header line (kept if it already exists)."""
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        pa_csv.write_csv(sample(rows, seed=seed), partial)
        partial.rename(path)
    return path


def write_parquet_parts(rows: int, folder: Path, *, files: int, seed: int = 0) -> Path:
    """`rows` rows in `files` Parquet files of about equal size (kept if the folder exists)."""
    if folder.is_dir() and any(folder.glob("*.parquet")):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    base = adult()
    per_file = -(-rows // files)
    for index in range(files):
        count = min(per_file, rows - index * per_file)
        path = folder / f"part-{index:03d}.parquet"
        writer = pq.ParquetWriter(path, sample(1, seed=0, base=base).schema)
        for start in range(0, count, 500_000):  # a few row groups per file, little memory
            chunk = sample(min(500_000, count - start), seed=seed * 1000 + index * 97 + start)
            writer.write_table(chunk, row_group_size=128_000)
        writer.close()
    return folder
