"""The base of every config section: unknown keys are errors, values are checked when set."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, fields are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
