"""`mlcli predict` on the tiny trained runs: outputs equal the saved model's own, every output
format, stdin to stdout, missing columns, unseen values, and an interrupted predict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()


def _predict(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["predict", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def _own_outputs(run: Path, table: pa.Table) -> np.ndarray:
    """The saved model called by Keras itself on the table's raw columns (no `Predictor`)."""
    import keras

    from mlcli.preprocessing.inputs import model_inputs
    from mlcli.preprocessing.layers import to_tensors
    from mlcli.runs.loading import open_run

    loaded = open_run(run)
    inputs = to_tensors(model_inputs(table, loaded.schema, source="test"), loaded.schema)
    return keras.ops.convert_to_numpy(loaded.model(inputs, training=False))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_outputs_equal_the_saved_models_own(trained_runs, tmp_path, task):
    run, data = trained_runs[task], trained_runs["data"]
    output = tmp_path / "out.csv"
    code, stdout, stderr = _predict(
        str(run), "--data", str(data), "-o", str(output), "--keep", "id"
    )
    assert code == 0, stderr
    assert stdout.strip() == str(output)
    assert "400 rows in" in stderr
    table = pa_csv.read_csv(data)
    written = pa_csv.read_csv(output)
    assert written.num_rows == 400
    assert written.column("id").to_pylist() == table.column("id").to_pylist()
    own = _own_outputs(run, table)
    classes = json.loads((run / "schema.json").read_text())["target"]["classes"]
    if task == "regression":
        assert written.column_names == ["id", "prediction"]
        np.testing.assert_allclose(written.column("prediction").to_numpy(), own[:, 0], atol=1e-5)
        return
    probability = [n for n in written.column_names if n.startswith("probability_")]
    assert len(probability) == (1 if task == "binary" else len(classes))
    got = np.stack([written.column(n).to_numpy() for n in probability], axis=1)
    np.testing.assert_allclose(got, own, atol=1e-6)
    expected = (own[:, 0] >= 0.5).astype(int) if task == "binary" else own.argmax(axis=1)
    predicted = [str(v) for v in written.column("prediction").to_pylist()]
    assert predicted == [str(classes[i]) for i in expected]


def test_parquet_and_json_lines_and_compressed_csv(trained_runs, tmp_path):
    run, data = str(trained_runs["binary"]), str(trained_runs["data"])
    results = {}
    for name in ("out.parquet", "out.jsonl", "out.csv.gz"):
        code, _, stderr = _predict(run, "--data", data, "-o", str(tmp_path / name), "-q")
        assert code == 0, stderr
    results["parquet"] = pq.read_table(tmp_path / "out.parquet")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    results["jsonl"] = pa.Table.from_pylist([json.loads(line) for line in lines])
    results["csv.gz"] = pa_csv.read_csv(tmp_path / "out.csv.gz")
    for table in results.values():
        assert table.num_rows == 400
        assert (
            table.column("prediction").to_pylist() == results["parquet"]["prediction"].to_pylist()
        )
    code, _, stderr = _predict(run, "--data", data, "-o", str(tmp_path / "out.parquet"))
    assert code == 2 and "--force" in stderr
    code, _, stderr = _predict(run, "--data", data, "-o", str(tmp_path / "out.xyz"))
    assert code == 2 and "--format" in stderr


def test_stdin_to_stdout_without_label_with_unseen_values(trained_runs):
    table = pa_csv.read_csv(trained_runs["data"]).drop(["label", "tier", "value"]).slice(0, 50)
    colors = ["purple"] * 10 + table.column("color").to_pylist()[10:]
    table = table.set_column(table.column_names.index("color"), "color", pa.array(colors))
    table = table.set_column(
        table.column_names.index("income"), "income", pa.nulls(50, pa.float64())
    )
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    code, stdout, stderr = _predict(
        str(trained_runs["binary"]), "--data", "-", "--output", "-", input=sink.getvalue()
    )
    assert code == 0, stderr
    written = pa_csv.read_csv(io.BytesIO(stdout.encode()))
    assert written.num_rows == 50  # stdout holds the CSV and nothing else
    assert np.all(np.isfinite(written.column(written.column_names[1]).to_numpy()))


def test_missing_columns_exit_3_and_write_nothing(trained_runs, tmp_path):
    table = pa_csv.read_csv(trained_runs["data"]).drop(["color", "review"])
    pa_csv.write_csv(table, tmp_path / "partial.csv")
    output = tmp_path / "out.csv"
    code, _, stderr = _predict(
        str(trained_runs["binary"]), "--data", str(tmp_path / "partial.csv"), "-o", str(output)
    )
    assert code == 3
    assert "'color'" in stderr and "'review'" in stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "partial.csv"]
    code, _, stderr = _predict(str(tmp_path / "nowhere"), "--data", "x.csv", "-o", str(output))
    assert code == 4


def test_an_interrupted_predict_leaves_no_output(trained_runs, tmp_path, monkeypatch):
    from mlcli.inference.predictor import Predictor

    pq.write_table(pa_csv.read_csv(trained_runs["data"]), tmp_path / "data.parquet")
    calls = []
    original = Predictor.run

    def interrupted(self, prepared):
        calls.append(prepared.rows)
        if len(calls) == 3:  # two batches are already written to the partial file
            raise KeyboardInterrupt
        return original(self, prepared)

    monkeypatch.setattr(Predictor, "run", interrupted)
    output = tmp_path / "out.parquet"
    code, _, stderr = _predict(
        str(trained_runs["binary"]),
        "--data",
        str(tmp_path / "data.parquet"),
        "-o",
        str(output),
        "--batch-size",
        "100",
    )
    assert code == 130 and "interrupted" in stderr
    assert calls == [100, 100, 100]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]


def test_an_empty_table_gives_an_output_with_only_the_header(trained_runs):
    header = pa_csv.read_csv(trained_runs["data"]).slice(0, 0)
    sink = io.BytesIO()
    pa_csv.write_csv(header, sink)
    code, stdout, stderr = _predict(
        str(trained_runs["multiclass"]),
        "--data",
        "-",
        "-o",
        "-",
        "--keep",
        "id",
        input=sink.getvalue(),
    )
    assert code == 0, stderr
    assert stdout.splitlines() == [
        '"id","prediction","probability_0","probability_1","probability_2"'
    ]


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl", "out.parquet", "out.csv.gz"])
def test_an_output_in_missing_folders_creates_them(trained_runs, tmp_path, name):
    output = tmp_path / "out" / "sub" / name
    code, stdout, stderr = _predict(
        str(trained_runs["binary"]), "--data", str(trained_runs["data"]), "-o", str(output), "-q"
    )
    assert code == 0, stderr
    assert stdout.strip() == str(output)
    written = sorted(p.name for p in output.parent.iterdir())
    assert written == sorted([name, f"{name}.drift.json"])  # no temporary left


def test_an_output_folder_that_cannot_be_made_is_a_usage_error(trained_runs, tmp_path):
    (tmp_path / "file").write_text("x")
    output = tmp_path / "file" / "out.csv"
    code, _, stderr = _predict(
        str(trained_runs["binary"]), "--data", str(trained_runs["data"]), "-o", str(output)
    )
    assert code == 2 and "cannot create the folder" in stderr and str(output.parent) in stderr


class _RawSink(io.RawIOBase):
    """A raw stream, as stdout is under PYTHONUNBUFFERED: each write may take only part."""

    def __init__(self, chunk: int, closes_after: int | None = None) -> None:
        self.chunk, self.closes_after, self.data = chunk, closes_after, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if self.closes_after is not None and len(self.data) >= self.closes_after:
            raise BrokenPipeError(32, "Broken pipe")
        taken = bytes(data[: self.chunk])
        self.data += taken
        return len(taken)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_stream_writers_write_every_byte_of_a_partial_writing_stream(fmt, chunk):
    from mlcli.inference.writers import open_writer

    table = pa.table({"id": list(range(300)), "label": ["a", "b", "c"] * 100})
    sink = _RawSink(chunk)
    writer = open_writer(fmt, sink)
    writer.write(table)
    writer.close()
    lines = bytes(sink.data).decode().splitlines()
    assert len(lines) == 300 + (fmt == "csv")


def test_a_closed_pipe_raises_rather_than_dropping_rows():
    from mlcli.inference.writers import open_writer

    writer = open_writer("jsonl", _RawSink(4096, closes_after=100))
    with pytest.raises(BrokenPipeError):
        writer.write(pa.table({"id": list(range(1000))}))
        writer.close()


def test_predict_into_a_closed_pipe_ends_quietly_with_141(trained_runs, tmp_path):
    """`mlcli predict ... -o - | head -1`: 128 + SIGPIPE, no traceback, under PYTHONUNBUFFERED."""
    import os
    import subprocess
    import sys

    from conftest import make_table

    data = tmp_path / "big.csv"
    pa_csv.write_csv(make_table(20000), data)
    command = [sys.executable, "-m", "mlcli", "predict", str(trained_runs["binary"])]
    command += ["--data", str(data), "-o", "-", "--format", "jsonl", "--quiet"]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # as `head -1` does
    errors = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141, errors
    assert json.loads(first)["prediction"] in ("high", "low")
    assert "Traceback" not in errors and "internal error" not in errors


@pytest.mark.parametrize("value", [1e39, -3.5e38, 1e300])
def test_a_number_beyond_float32_is_a_data_error_naming_column_and_row(
    trained_runs, tmp_path, value
):
    table = pa_csv.read_csv(trained_runs["data"]).slice(0, 5)
    income = table.column("income").to_pylist()
    income[3] = value
    table = table.set_column(table.column_names.index("income"), "income", pa.array(income))
    pa_csv.write_csv(table, tmp_path / "huge.csv")
    output = tmp_path / "out.csv"
    code, _, stderr = _predict(
        str(trained_runs["binary"]), "--data", str(tmp_path / "huge.csv"), "-o", str(output)
    )
    assert code == 3, stderr
    assert "'income'" in stderr and "row 4" in stderr and "float32" in stderr
    assert not output.exists()


@pytest.mark.parametrize(
    "kept_type",
    [pa.list_(pa.int64()), pa.struct([("a", pa.int64())]), pa.map_(pa.string(), pa.int64())],
)
def test_a_kept_nested_column_goes_to_parquet_and_jsonl_and_is_exit_3_for_csv(
    trained_runs, tmp_path, kept_type
):
    table = pa_csv.read_csv(trained_runs["data"]).slice(0, 20)
    values = {
        "list": [[i, i + 1] for i in range(20)],
        "struct": [{"a": i} for i in range(20)],
        "map": [[("k", i)] for i in range(20)],
    }[str(kept_type).split("<")[0]]
    table = table.append_column("extra", pa.array(values, kept_type))
    pq.write_table(table, tmp_path / "nested.parquet")
    run, data = str(trained_runs["binary"]), str(tmp_path / "nested.parquet")
    for name in ("out.parquet", "out.jsonl"):
        code, _, stderr = _predict(
            run, "--data", data, "-o", str(tmp_path / name), "--keep", "extra"
        )
        assert code == 0, stderr
    assert pq.read_table(tmp_path / "out.parquet").column("extra").to_pylist() == values
    code, _, stderr = _predict(
        run, "--data", data, "-o", str(tmp_path / "out.csv"), "--keep", "extra"
    )
    assert code == 3, stderr
    kind = str(kept_type).split("<")[0]  # Parquet renames a list's item field
    assert "column 'extra'" in stderr and f"Arrow type {kind}<" in stderr and ".parquet" in stderr
    assert not (tmp_path / "out.csv").exists()


def _drifted_data(data: Path, folder: Path) -> Path:
    """The fixture's table with `age` 100 years older and a colour never seen in training."""
    table = pa_csv.read_csv(data)
    age = pc.add(table.column("age"), 100.0)
    colors = [
        "violet" if i % 4 == 0 else c for i, c in enumerate(table.column("color").to_pylist())
    ]
    table = table.set_column(table.column_names.index("age"), "age", age)
    table = table.set_column(table.column_names.index("color"), "color", pa.array(colors))
    path = folder / "drifted.csv"
    pa_csv.write_csv(table, path)
    return path


def test_drift_is_written_beside_the_predictions_and_small_on_the_training_data(
    trained_runs, tmp_path
):
    output = tmp_path / "scores.parquet"
    code, _, stderr = _predict(
        str(trained_runs["binary"]),
        "--data",
        str(trained_runs["data"]),
        "-o",
        str(output),
        "--fail-on-drift",
        "0.2",
    )
    assert code == 0, stderr
    drift = json.loads((tmp_path / "scores.parquet.drift.json").read_text())
    assert drift["rows"] == 400
    psi = {c["name"]: c["psi"] for c in drift["columns"]}
    assert psi.pop("review") is None  # text: missing rates only
    assert set(psi) == {"age", "income", "color", "grade", "member"}
    assert all(value < 0.1 for value in psi.values()), psi
    assert "largest PSI" in stderr and "scores.parquet.drift.json" in stderr


def test_fail_on_drift_exits_5_naming_the_columns_after_every_prediction_is_written(
    trained_runs, tmp_path
):
    data, output = _drifted_data(trained_runs["data"], tmp_path), tmp_path / "scores.csv"
    code, _, stderr = _predict(
        str(trained_runs["binary"]),
        "--data",
        str(data),
        "-o",
        str(output),
        "--keep",
        "id",
        "--fail-on-drift",
        "0.2",
    )
    assert code == 5, stderr
    message = stderr.strip().splitlines()[-1]
    assert "--fail-on-drift 0.2" in message and "age (PSI" in message and "color (PSI" in message
    assert "grade" not in message and str(output) in message
    assert pa_csv.read_csv(output).num_rows == 400  # complete, under its own name
    drift = json.loads((tmp_path / "scores.csv.drift.json").read_text())
    color = next(c for c in drift["columns"] if c["name"] == "color")
    assert color["unseen_examples"] == ["violet"] and color["unseen_rate"] == pytest.approx(0.25)
    # without the option the same drift is reported, not failed; the report is not replaced
    code, _, stderr = _predict(str(trained_runs["binary"]), "--data", str(data), "-o", str(output))
    assert code == 2 and "scores.csv" in stderr and "--force" in stderr
    code, _, stderr = _predict(
        str(trained_runs["binary"]), "--data", str(data), "-o", str(output), "--force"
    )
    assert code == 0, stderr


def test_drift_of_predictions_to_stdout_goes_to_the_final_event(trained_runs, tmp_path):
    data = _drifted_data(trained_runs["data"], tmp_path)
    result = runner.invoke(
        app,
        [
            "predict",
            str(trained_runs["binary"]),
            "--data",
            str(data),
            "-o",
            "-",
            "--log-format",
            "json",
            "--fail-on-drift",
            "0.5",
        ],
    )
    assert result.exit_code == 5, result.stderr
    assert pa_csv.read_csv(io.BytesIO(result.stdout.encode())).num_rows == 400
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    drift = next(e for e in events if e.get("event") == "drift")
    assert drift["psi"]["age"] > 0.5 and drift["file"] is None
    assert list(tmp_path.iterdir()) == [data]  # no drift file for stdout


def test_a_run_trained_before_drift_statistics_predicts_without_psi(trained_runs, tmp_path):
    import shutil

    run = Path(shutil.copytree(trained_runs["binary"], tmp_path / "old"))
    schema = json.loads((run / "schema.json").read_text())
    for column in schema["columns"]:
        for key in ("missing_rate", "bins", "bin_fractions", "frequencies"):
            column.pop(key)
    (run / "schema.json").write_text(json.dumps(schema))
    data, output = _drifted_data(trained_runs["data"], tmp_path), tmp_path / "scores.csv"
    code, _, stderr = _predict(
        str(run), "--data", str(data), "-o", str(output), "--fail-on-drift", "0.2"
    )
    assert code == 0, stderr
    drift = json.loads((tmp_path / "scores.csv.drift.json").read_text())
    assert all(c["psi"] is None and c["reason"] for c in drift["columns"])
    assert "PSI unavailable" in stderr


@pytest.mark.parametrize("bound", ["-1", "nan"])
def test_a_negative_or_undefined_drift_bound_is_a_usage_error(trained_runs, tmp_path, bound):
    output = tmp_path / "scores.csv"
    code, _, stderr = _predict(
        str(trained_runs["binary"]),
        "--data",
        str(trained_runs["data"]),
        "-o",
        str(output),
        "--fail-on-drift",
        bound,
    )
    assert code == 2 and "--fail-on-drift" in stderr
    assert not output.exists()


def test_drift_counted_batch_by_batch_equals_one_batch(trained_runs, tmp_path):
    data = _drifted_data(trained_runs["data"], tmp_path)
    reports = []
    for size in ("7", "65536"):
        output = tmp_path / f"scores-{size}.csv"
        code, _, stderr = _predict(
            str(trained_runs["binary"]),
            "--data",
            str(data),
            "-o",
            str(output),
            "-q",
            "--batch-size",
            size,
        )
        assert code == 0, stderr
        reports.append(json.loads((tmp_path / f"{output.name}.drift.json").read_text()))
    small, whole = reports
    assert small["rows"] == whole["rows"] == 400
    for got, expected in zip(small["columns"], whole["columns"], strict=True):
        assert got["shares"] == pytest.approx(expected["shares"]), got["name"]
        assert got["psi"] == pytest.approx(expected["psi"]), got["name"]


def test_a_saved_threshold_decides_and_an_explicit_one_still_wins(trained_runs, tmp_path):
    import shutil

    from mlcli.runs import directory as runs
    from mlcli.runs.threshold import write_threshold_record

    run = Path(shutil.copytree(trained_runs["binary"], tmp_path / "run"))
    data = str(trained_runs["data"])
    code, _, stderr = _predict(str(run), "--data", data, "--output", str(tmp_path / "a.csv"))
    assert code == 0, stderr
    before = pa_csv.read_csv(tmp_path / "a.csv")
    probability = np.asarray(before.column(1).to_pylist())
    threshold = float(np.quantile(probability, 0.8))
    write_threshold_record(runs.Run(run), {"threshold": threshold, "criterion": "test"})
    code, _, stderr = _predict(str(run), "--data", data, "--output", str(tmp_path / "b.csv"))
    assert code == 0, stderr
    assert f"positive at probability >= {threshold:g} (saved in the run)" in stderr
    positive = before.column_names[1].removeprefix("probability_")
    saved = pa_csv.read_csv(tmp_path / "b.csv").column("prediction").to_pylist()
    assert [str(v) == positive for v in saved] == list(probability >= threshold)
    code, _, stderr = _predict(
        str(run), "--data", data, "--output", str(tmp_path / "c.csv"), "--threshold", "0.5"
    )
    assert code == 0 and "(--threshold)" in stderr
    explicit = pa_csv.read_csv(tmp_path / "c.csv").column("prediction")
    assert explicit.to_pylist() == before.column("prediction").to_pylist()


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_an_infinite_number_is_exit_3_naming_the_file_the_column_and_the_row(
    trained_runs, tmp_path, bad
):
    table = pa_csv.read_csv(trained_runs["data"])
    income = table.column("income").to_pylist()
    income[123] = bad
    index = table.column_names.index("income")
    data = tmp_path / "infinite.csv"
    pa_csv.write_csv(table.set_column(index, "income", pa.array(income, pa.float64())), data)
    output = tmp_path / "scores.csv"
    code, _, stderr = _predict(str(trained_runs["binary"]), "--data", str(data), "-o", str(output))
    assert code == 3
    line = stderr.strip().splitlines()[-1]
    assert str(data) in line and "'income'" in line and "infinite" in line
    assert not output.exists()
