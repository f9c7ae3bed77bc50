"""The binary decision threshold a run keeps: `threshold.json`, and where it came from.

`mlcli evaluate RUN --data PATH --choose-threshold precision=0.9 --save` writes it; every later
`predict`, `export` and `serve` of the run decides with it unless `--threshold` says otherwise
(`mlcli.inference.labels.decision_threshold`). The file records the threshold with its
provenance, so a reader can tell which data and which criterion chose it:

```json
{"threshold": 0.7312, "criterion": "precision=0.9",
 "data": [{"path": "/data/valid.parquet", "bytes": 91234, "sha256": "..."}],
 "rows": 3256, "metrics": {"precision": 0.901, "recall": 0.52, ...},
 "chosen": "2026-12-06T03:10:00+00:00", "mlcli": "0.1.0"}
```
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from mlcli import files
from mlcli.errors import RunError
from mlcli.runs import directory as runs


def read_threshold_record(run: runs.Run) -> dict[str, Any] | None:
    """The run's `threshold.json` (None when none was saved).

    Raises `RunError` (exit 4) when the file does not read or holds no probability.
    """
    path = run.file(runs.THRESHOLD)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RunError(f"{path}: does not read as JSON ({error}); remove it or save again") from None
    value = record.get("threshold") if isinstance(record, dict) else None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise RunError(
            f"{path}: `threshold` is {value!r}, expected a probability in [0, 1]; "
            "remove the file or choose again with mlcli evaluate --choose-threshold ... --save"
        )
    return dict(record)


def saved_threshold(run: runs.Run) -> float | None:
    """The threshold the run keeps, or None when it keeps none (decide at 0.5)."""
    record = read_threshold_record(run)
    return None if record is None else float(record["threshold"])


def write_threshold_record(run: runs.Run, record: Mapping[str, Any]) -> None:
    """Writes `threshold.json` into the run atomically (a reader sees the old or the new)."""
    files.write_json(run.file(runs.THRESHOLD), dict(record))
