"""The threshold a run keeps: written atomically, read back, and refused when corrupt."""

from __future__ import annotations

import pytest

from mlcli.errors import RunError
from mlcli.runs import directory as runs
from mlcli.runs.threshold import read_threshold_record, saved_threshold, write_threshold_record


def test_no_file_keeps_no_threshold_and_a_written_one_reads_back(tmp_path):
    run = runs.Run(tmp_path)
    assert saved_threshold(run) is None
    write_threshold_record(run, {"threshold": 0.73, "criterion": "precision=0.9"})
    assert saved_threshold(run) == 0.73
    assert read_threshold_record(run) == {"threshold": 0.73, "criterion": "precision=0.9"}
    assert [p.name for p in tmp_path.iterdir()] == [runs.THRESHOLD]  # no temporary left


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "does not read as JSON"),
        ('{"threshold": 1.5}', "`threshold` is 1.5, expected a probability"),
        ('{"threshold": "0.5"}', "`threshold` is '0.5'"),
        ('{"threshold": true}', "`threshold` is True"),
        ("[0.5]", "`threshold` is None"),
    ],
)
def test_a_corrupt_file_is_a_run_error_naming_it(tmp_path, text, message):
    (tmp_path / runs.THRESHOLD).write_text(text)
    with pytest.raises(RunError, match=message) as raised:
        saved_threshold(runs.Run(tmp_path))
    assert str(tmp_path / runs.THRESHOLD) in str(raised.value)
