"""The one error boundary: each kind of failure gives one line on stderr and its exit code,
a traceback only with --verbose."""

from __future__ import annotations

import pydantic
import pytest
import typer

from mlcli.cli.boundary import run_guarded
from mlcli.cli.options import log_format
from mlcli.errors import ConfigError, DataError, MlcliErrorUsage


class _Point(pydantic.BaseModel):
    x: int


def _exit_code(action, capsys, *, verbose: bool = False) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as done:
        run_guarded(action, verbose=verbose)
    return done.value.exit_code, capsys.readouterr().err


def _raise(error: Exception):
    def action() -> None:
        raise error

    return action


def test_mlcli_errors_are_one_line_and_their_exit_code(capsys):
    code, err = _exit_code(_raise(DataError("data.csv: no column 'age'")), capsys)
    assert (code, err) == (3, "error: data.csv: no column 'age'\n")


def test_a_pydantic_validation_error_is_a_usage_error_not_a_bug(capsys):
    code, err = _exit_code(lambda: _Point(x="many"), capsys)
    assert code == 2
    assert err.startswith("error: _Point: x: Input should be a valid integer")
    assert len(err.splitlines()) == 1


def test_a_traceback_only_with_verbose(capsys):
    code, err = _exit_code(_raise(ValueError("boom")), capsys)
    assert code == 1
    assert "Traceback" not in err
    assert "internal error: ValueError: boom. This is a bug in mlcli" in err
    code, err = _exit_code(_raise(ValueError("boom")), capsys, verbose=True)
    assert code == 1
    assert "Traceback" in err
    assert err.splitlines()[-1].startswith("internal error: ValueError: boom")


def test_what_the_action_returns_is_returned():
    assert run_guarded(lambda: 42, verbose=False) == 42


def test_a_bad_log_format_is_a_usage_error_with_exit_2():
    assert log_format("json") == "json"
    with pytest.raises(MlcliErrorUsage, match="--log-format: expected text or json, found 'xml'"):
        log_format("xml")
    assert issubclass(MlcliErrorUsage, ConfigError)
    assert MlcliErrorUsage.exit_code == 2


_URI = "postgresql+psycopg2://ann:s3cret-pw@db.example:5432/mlflow"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError(f"tracking.mlflow.uri: MLflow at {_URI!r} refused the run"), 2),
        (DataError(f"{_URI}: not a table"), 3),
        (ValueError(f"could not connect to {_URI}"), 1),  # a bug's line is masked too
    ],
)
@pytest.mark.parametrize("verbose", [False, True])
def test_every_error_line_and_traceback_is_masked(capsys, error, code, verbose):
    found, err = _exit_code(_raise(error), capsys, verbose=verbose)
    assert found == code
    assert "s3cret-pw" not in err
    assert "ann:***@db.example:5432" in err.splitlines()[-1]
    assert ("Traceback" in err) == verbose


def test_a_value_filled_from_the_environment_is_masked(capsys, tmp_path, monkeypatch):
    """The value of `${VAR}` is masked wherever a message quotes it."""
    from mlcli.config.loading import load_config

    token = "tok-5b1e0c9d2a"
    monkeypatch.setenv("NA_TOKEN", token)
    path = tmp_path / "config.yaml"
    path.write_text(
        "name: x\ndata: {train: t.csv, csv: {na_values: ['${NA_TOKEN}']}}\ntarget: {column: y}\n"
    )
    config = load_config(path)
    shown = config.data.csv.na_values
    code, err = _exit_code(_raise(DataError(f"t.csv: na_values {shown} match no cell")), capsys)
    assert code == 3 and token not in err and "['***']" in err
