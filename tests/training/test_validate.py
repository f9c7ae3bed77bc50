"""`mlcli validate`: the config and a sample of the data checked, without TensorFlow.

Moved from tests/config/test_config.py: these check the command, not the config package.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app

runner = CliRunner()


def test_missing_column_is_exit_3_and_named(write_config):
    path = write_config(features={"agee": "numeric"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 3
    assert "'agee'" in result.stderr and "did you mean 'age'" in result.stderr


def test_validate_reports_inferred_types(write_config):
    path = write_config(features={"exclude": ["id", "tier", "value"]})
    result = runner.invoke(app, ["validate", str(path), "--log-format", "json"])
    assert result.exit_code == 0, result.output
    assert '"age": "numeric"' in result.stdout
    assert '"member": "binary"' in result.stdout
    assert '"review": "text"' in result.stdout
    assert '"color": "categorical"' in result.stdout


@pytest.mark.parametrize("arguments", [["--help"], ["validate", "{config}"]])
def test_help_and_validate_do_not_import_tensorflow(arguments, write_config):
    config = write_config()
    args = [a.replace("{config}", str(config)) for a in arguments]
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mlcli.cli.app import app\n"
        f"result = CliRunner().invoke(app, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("value", [1e39, -3.5e38, 1e300])
def test_a_number_beyond_float32_is_refused_as_training_would(tmp_path, value):
    (tmp_path / "t.csv").write_text(f"x,y\n1,a\n{value!r},b\n2,a\n3,b\n", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text("name: b\ndata: {train: t.csv, validation: 0.5}\ntarget: {column: y}\n")
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 3, result.output
    assert "t.csv: column 'x'" in result.stderr and "row 2" in result.stderr


def test_an_unusable_column_is_named_with_its_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tags = pa.array([[i] for i in range(8)], pa.list_(pa.int64()))
    pq.write_table(pa.table({"tags": tags, "y": ["a", "b"] * 4}), tmp_path / "t.parquet")
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: b\ndata: {train: t.parquet, validation: 0.5}\ntarget: {column: y}\n"
        "features: {tags: categorical}\n"
    )
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 3, result.output
    assert "t.parquet: feature column 'tags' has Arrow type list<" in result.stderr
