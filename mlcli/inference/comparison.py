"""How close two models' outputs are: the figures of the composition check (training) and of
the light path's check (`mlcli.inference.conversion`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def compare_outputs(raw: np.ndarray, direct: np.ndarray, *, tolerance: float) -> dict[str, Any]:
    """The composition check's figures: `raw` (the saved model) against `direct` (the core).

    The difference is measured against the outputs' scale, as float32 rounding grows with it:
    `max|raw - direct| / max(1, max|direct|)` must be at most `tolerance`. NaN or infinite
    outputs, or outputs of another shape, fail (their figures are None).
    """
    result: dict[str, Any] = {
        "max_relative_difference": None,
        "max_abs_difference": None,
        "tolerance": tolerance,
        "passed": False,
    }
    raw, direct = np.asarray(raw, np.float64), np.asarray(direct, np.float64)
    if raw.shape != direct.shape:
        return result
    if raw.size == 0:
        return {**result, "max_relative_difference": 0.0, "max_abs_difference": 0.0, "passed": True}
    with np.errstate(invalid="ignore", over="ignore"):
        absolute = float(np.max(np.abs(raw - direct)))
        relative = absolute / max(1.0, float(np.max(np.abs(direct))))
    finite = bool(np.isfinite(raw).all() and np.isfinite(direct).all())
    return {
        **result,
        "max_relative_difference": relative if math.isfinite(relative) else None,
        "max_abs_difference": absolute if math.isfinite(absolute) else None,
        "passed": finite and relative <= tolerance,
    }
