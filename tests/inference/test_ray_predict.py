"""`mlcli predict --ray` against the local predict: the same rows, in order, from Parquet parts
and from a CSV of another dialect; the output folder complete or absent; the checks that fail
before Ray starts. Ray runs once for the session (`ray_local`, 2 CPUs): one actor predicts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from conftest import make_table
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.errors import ConfigError
from mlcli.inference import ray_predict
from mlcli.inference.ray_batches import is_part, part_name

runner = CliRunner()


def _predict(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["predict", *args])
    return result.exit_code, result.stderr


def _parts(table: pa.Table, folder: Path, count: int = 4) -> Path:
    folder.mkdir()
    size = -(-table.num_rows // count)
    for index in range(count):
        pq.write_table(table.slice(index * size, size), folder / f"rows-{index}.parquet")
    return folder


def _read_parts(folder: Path) -> pa.Table:
    names = sorted(entry.name for entry in folder.iterdir())
    assert names and all(is_part(name) for name in names), names
    read = pq.read_table if names[0].endswith(".parquet") else pa_csv.read_csv
    return pa.concat_tables([read(folder / name) for name in names])


def _assert_same_rows(got: pa.Table, expected: pa.Table) -> None:
    """Column names and types, ids and labels exactly; probabilities to float32 rounding."""
    assert got.schema == expected.schema
    assert got.num_rows == expected.num_rows
    for name in got.column_names:
        values, reference = got.column(name), expected.column(name)
        if pa.types.is_floating(values.type):
            np.testing.assert_allclose(values.to_numpy(), reference.to_numpy(), rtol=0, atol=1e-6)
        else:
            assert values.to_pylist() == reference.to_pylist(), name


@pytest.mark.parametrize(("task", "uri"), [("binary", False), ("regression", True)])
def test_parquet_parts_predict_as_the_local_predict_row_for_row(
    ray_local, light_runs, tmp_path, task, uri
):
    """The regression run reads the folder as a file:// URI, through pyarrow's filesystems."""
    table = make_table(1000, seed=21)  # other rows than training's
    data = _parts(table, tmp_path / "data")
    local, folder = tmp_path / "local.parquet", tmp_path / "predictions"
    code, stderr = _predict(
        str(light_runs[task]), "--data", str(data), "-o", str(local), "--keep", "id", "-q"
    )
    assert code == 0, stderr
    code, stderr = _predict(
        str(light_runs[task]),
        "--data",
        f"file://{data}" if uri else str(data),
        "-o",
        str(folder),
        "--keep",
        "id",
        "--batch-size",
        "128",
        "--ray",
    )
    assert code == 0, stderr
    assert "onnxruntime" in stderr and "1000 rows" in stderr
    _assert_same_rows(_read_parts(folder), pq.read_table(local))
    assert not [e for e in tmp_path.iterdir() if e.name.startswith(".")]  # no temporary left
    assert folder.stat().st_mode & 0o777 == 0o755  # readable by others, as predict's files


def test_a_csv_of_another_dialect_is_read_as_the_local_predict_reads_it(
    ray_local, light_runs, tmp_path
):
    """A banner line, `;` between fields, quoted text: --skip-rows and --delimiter on both."""
    table = make_table(300, seed=22).drop_columns(["review"])
    data = tmp_path / "new.txt"
    with data.open("wb") as handle:
        handle.write(b"exported by a tool; not a row\n")
        pa_csv.write_csv(
            table, handle, pa_csv.WriteOptions(delimiter=";", quoting_style="all_valid")
        )
    options = ["--delimiter", ";", "--skip-rows", "1", "--keep", "id", "--threshold", "0.3"]
    run = str(light_runs["binary"])
    local, folder = tmp_path / "local.csv", tmp_path / "predictions.csv"
    code, stderr = _predict(run, "--data", str(data), "-o", str(local), *options, "-q")
    assert code == 0, stderr
    code, stderr = _predict(run, "--data", str(data), "-o", str(folder), *options, "--ray", "-q")
    assert code == 0, stderr
    assert all(name.endswith(".csv") for name in (e.name for e in folder.iterdir()))
    _assert_same_rows(_read_parts(folder), pa_csv.read_csv(local))
    (folder / "part-000099.csv").write_text("a part of an older predict\n")
    code, stderr = _predict(
        run, "--data", str(data), "-o", str(folder), *options, "--ray", "--force", "-q"
    )
    assert code == 0, stderr  # --force replaces a folder of parts, stale ones included
    _assert_same_rows(_read_parts(folder), pa_csv.read_csv(local))


@pytest.mark.parametrize("words_everywhere", [False, True], ids=["one-part", "every-part"])
def test_ages_that_are_words_fail_with_exit_3_and_leave_no_folder(
    ray_local, light_runs, tmp_path, words_everywhere
):
    """One part's `age` is text: the parts do not share a schema (Ray's reading fails); every
    part's `age` is text, some of it words: an actor fails on them."""
    data = _parts(make_table(400, seed=23), tmp_path / "data")
    for index in range(4) if words_everywhere else [2]:
        path = data / f"rows-{index}.parquet"
        part = pq.read_table(path)
        ages = pc.cast(part.column("age"), pa.string())
        if index == 2:
            ages = pa.array(["old"] * part.num_rows, pa.string())
        pq.write_table(part.set_column(part.column_names.index("age"), "age", ages), path)
    folder = tmp_path / "predictions"
    run = str(light_runs["binary"])
    code, stderr = _predict(run, "--data", str(data), "-o", str(folder), "--ray")
    assert code == 3, stderr
    assert "age" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()[-1]) < 400  # one line, not Ray's report
    assert sorted(e.name for e in tmp_path.iterdir()) == ["data"]  # no folder, no temporary


@pytest.mark.parametrize("bad_line", ["|a banner line", "1,2"], ids=["banner", "short-row"])
def test_a_csv_row_pyarrow_cannot_parse_fails_with_exit_3_and_leaves_no_folder(
    ray_local, light_runs, tmp_path, bad_line
):
    """Ray's CSV reader loses pyarrow's error on its way back: still exit 3, one line, no folder."""
    data = tmp_path / "dä ta"
    data.mkdir()
    pa_csv.write_csv(make_table(50, seed=5), data / "rows ü.csv")
    lines = (data / "rows ü.csv").read_text().splitlines()
    (data / "rows ü.csv").write_text("\n".join([lines[0], bad_line, *lines[1:]]) + "\n")
    folder = tmp_path / "predictions"
    run = str(light_runs["binary"])
    code, stderr = _predict(run, "--data", str(data / "rows ü.csv"), "-o", str(folder), "--ray")
    assert code == 3, stderr
    assert "rows ü.csv" in stderr and "Traceback" not in stderr and "bug" not in stderr
    assert len(stderr.strip().splitlines()[-1]) < 400
    assert sorted(e.name for e in tmp_path.iterdir()) == ["dä ta"]


def _no_ray_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was reached")

    monkeypatch.setattr(ray_predict, "connect", refuse)


def test_an_existing_output_fails_with_exit_2_before_ray_starts(light_runs, tmp_path, monkeypatch):
    _no_ray_start(monkeypatch)
    folder = tmp_path / "predictions"
    folder.mkdir()
    (folder / part_name(0, "parquet")).write_bytes(b"old")
    args = [str(light_runs["binary"]), "--data", str(light_runs["data"]), "-o", str(folder)]
    code, stderr = _predict(*args, "--ray")
    assert code == 2 and "already exists" in stderr and "--force" in stderr
    (folder / "notes.txt").write_text("mine")  # --force replaces a folder of parts only
    code, stderr = _predict(*args, "--ray", "--force")
    assert code == 2 and "notes.txt" in stderr
    assert (folder / "notes.txt").read_text() == "mine"


def test_without_ray_the_error_says_install_mlcli_ray(light_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as without the extra
    args = [str(light_runs["binary"]), "--data", str(light_runs["data"])]
    code, stderr = _predict(*args, "-o", str(tmp_path / "out"), "--ray")
    assert code == 2 and "install mlcli[ray]" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "-"], "not stdout"),
        (["-o", "s3://bucket/scores"], "shared folder"),
        (["--fail-on-drift", "0.2"], "--fail-on-drift"),
        (["--actors", "0"], "--actors"),
        (["--format", "xml"], "--format"),
        (["--ray", "not-an-address:99999"], "out of range"),
    ],
)
def test_options_that_ray_cannot_take_fail_with_exit_2_before_ray_starts(
    light_runs, tmp_path, monkeypatch, extra, message
):
    _no_ray_start(monkeypatch)
    args = [str(light_runs["binary"]), "--data", str(light_runs["data"])]
    output = [] if "-o" in extra else ["-o", str(tmp_path / "out")]
    ray = [] if "--ray" in extra else ["--ray"]
    code, stderr = _predict(*args, *output, *extra, *ray)
    assert code == 2, stderr
    assert message in stderr


def test_actors_without_ray_is_a_usage_error(light_runs, tmp_path):
    args = [str(light_runs["binary"]), "--data", str(light_runs["data"])]
    code, stderr = _predict(*args, "-o", str(tmp_path / "p.csv"), "--actors", "2")
    assert code == 2 and "only with --ray" in stderr
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    ("name", "requested", "expected"),
    [
        ("out", None, "parquet"),
        ("out.csv", None, "csv"),
        ("scores.PARQUET", None, "parquet"),
        ("out.jsonl", None, "jsonl"),
        ("out.2026", None, "parquet"),
        ("out.csv", "parquet", "parquet"),
        ("out", "jsonl", "jsonl"),
    ],
)
def test_the_parts_format_is_the_option_else_the_suffix_else_parquet(name, requested, expected):
    assert ray_predict.folder_format(Path(name), requested) == expected


@pytest.mark.parametrize(
    ("cpus", "nodes", "requested", "expected"),
    [
        (1.0, 1, None, 1),
        (2.0, 1, None, 1),
        (16.0, 1, None, 15),
        (64.0, 4, None, 60),
        (64.0, 4, 8, 8),
        (64.0, 4, 63, 63),
        (2.0, 1, 1, 1),
    ],
)
def test_the_pool_leaves_a_cpu_per_node_for_reading_and_writing(cpus, nodes, requested, expected):
    assert ray_predict.actor_pool(cpus, requested, nodes=nodes) == expected


@pytest.mark.parametrize(("cpus", "requested"), [(2.0, 2), (16.0, 16), (4.0, 9)])
def test_a_pool_that_would_hold_every_cpu_is_refused(cpus, requested):
    with pytest.raises(ConfigError, match="leaving a CPU"):
        ray_predict.actor_pool(cpus, requested)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (part_name(0, "parquet"), True),
        (part_name(12, "csv"), True),
        (part_name(3, "jsonl"), True),
        ("part-.parquet", False),
        ("part-01.txt", False),
        ("notes.parquet", False),
        (".part-000001.parquet.tmp", False),
    ],
)
def test_part_names_sort_in_row_order_and_are_recognised(name, expected):
    assert is_part(name) is expected
    assert sorted(part_name(i, "csv") for i in (10, 2, 1)) == [
        part_name(i, "csv") for i in (1, 2, 10)
    ]


@pytest.mark.slow
def test_a_run_without_the_light_path_predicts_with_keras_in_the_actors(
    ray_local, trained_runs, tmp_path
):
    """`trained_runs` has a text column: each actor loads the Keras model (TensorFlow)."""
    data = _parts(make_table(400, seed=24), tmp_path / "data")
    local, folder = tmp_path / "local.parquet", tmp_path / "predictions"
    run = str(trained_runs["binary"])
    code, stderr = _predict(run, "--data", str(data), "-o", str(local), "--keep", "id", "-q")
    assert code == 0, stderr
    code, stderr = _predict(run, "--data", str(data), "-o", str(folder), "--keep", "id", "--ray")
    assert code == 0, stderr
    assert "keras (text column" in stderr
    _assert_same_rows(_read_parts(folder), pq.read_table(local))
