"""The outcome of one `mlcli evaluate`: its metrics, where they were written, the missed gates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcli.errors import QualityGateError
from mlcli.evaluation.metrics import NOT_METRICS
from mlcli.features.drift import DriftReport


@dataclass
class Evaluation:
    """The outcome of one evaluation: metrics, where they were written, and missed gates."""

    run: Path
    data: str
    task: str
    metrics: dict[str, float]
    folder: Path | None = None
    baseline_run: Path | None = None
    baseline: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    drift: DriftReport | None = None
    # a calibrated run: ece, brier and log_loss of the model before its calibration layer
    uncalibrated: dict[str, float] = field(default_factory=dict)
    calibration: str | None = None  # temperature | isotonic, for a calibrated run
    # --choose-threshold: the threshold chosen, the criterion, and the metrics at it
    chosen_threshold: dict[str, Any] = field(default_factory=dict)
    threshold_saved: Path | None = None  # --save: the run's threshold.json

    def flat(self) -> dict[str, float]:
        """One flat mapping of names to numbers; with a baseline, `baseline/` and `delta/`;
        `uncalibrated/` for a calibrated run, `chosen/` for --choose-threshold, and each input
        column's PSI against the training data as `psi/<column>` (where known)."""
        result = dict(self.metrics)
        if self.drift is not None:
            result.update({f"psi/{name}": psi for name, psi in self.drift.psi().items()})
        for name, value in self.uncalibrated.items():
            result[f"uncalibrated/{name}"] = value
        for name, value in self.chosen_threshold.get("metrics", {}).items():
            result[f"chosen/{name}"] = value
        for name, value in self.baseline.items():
            result[f"baseline/{name}"] = value
            if name in self.metrics and name not in NOT_METRICS:
                result[f"delta/{name}"] = self.metrics[name] - value
        return result

    def raise_for_gates(self) -> None:
        """Raises `QualityGateError` naming every missed bound."""
        if self.failures:
            raise QualityGateError("quality gate failed: " + "; ".join(self.failures))
