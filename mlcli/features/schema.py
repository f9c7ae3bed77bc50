"""The feature schema: which column is what, and the statistics that preprocessing needs.

A `FeatureSchema` lists every input column of the model (`ColumnSchema`: its feature type, raw
dtype, statistics and vocabulary) and the target (`TargetSchema`: its task and classes). It is
written to `schema.json` and read back by every verb that uses a trained run;
`mlcli.features.build` computes it from a table, `mlcli.features.statistics` from record
batches, and `mlcli.preprocessing.layers` turns it into Keras layers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlcli.errors import RunError

SCHEMA_VERSION = 1

# An integer category that is missing is fed to the model as this value (never in a vocabulary).
INT_MISSING = -(2**62)


@dataclass
class ColumnSchema:
    """One input column of the model and how it is encoded."""

    name: str
    type: str  # numeric | categorical | binary | text
    dtype: str  # the raw input's dtype: float32 | string | int64
    mean: float = 0.0
    variance: float = 1.0
    has_missing: bool = False
    transform: str = "none"
    vocabulary: list[Any] = field(default_factory=list)
    encoding: str = "one_hot"  # one_hot | embedding (categorical, binary)
    embedding_dim: int = 0
    sequence_length: int = 0
    quantiles: list[float] = field(default_factory=list)  # numeric, after `log`, if any
    # The training distribution that `features.drift` compares new tables with (runs trained
    # before these were kept have None and empty lists; drift then says PSI is unavailable):
    missing_rate: float | None = None  # share of training rows with no value
    bins: list[float] = field(default_factory=list)  # numeric: inner edges, raw values
    bin_fractions: list[float] = field(default_factory=list)  # numeric: share per bin
    frequencies: list[float] = field(default_factory=list)  # categorical: share per vocabulary


@dataclass
class TargetSchema:
    """The label column: its task and classes (in the user's own values)."""

    column: str
    task: str
    classes: list[Any] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    scale: float = 1.0  # regression: raw target values are multiplied by this

    @property
    def positive_class(self) -> Any:
        """The class whose probability a binary model outputs."""
        return self.classes[1] if self.task == "binary" else None


@dataclass
class FeatureSchema:
    """Every input column and the target, as written to `schema.json`."""

    columns: list[ColumnSchema]
    target: TargetSchema
    excluded: dict[str, str] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    @property
    def input_names(self) -> list[str]:
        """The raw columns the model takes, in order."""
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def save(self, path: Path) -> None:
        """Writes `schema.json`."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        """The inverse of `to_dict`."""
        return cls(
            columns=[ColumnSchema(**c) for c in data["columns"]],
            target=TargetSchema(**data["target"]),
            excluded=dict(data.get("excluded", {})),
            version=int(data.get("version", SCHEMA_VERSION)),
        )

    @classmethod
    def load(cls, path: Path) -> FeatureSchema:
        """Reads `schema.json`, refusing one from an incompatible version."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            schema = cls.from_dict(data)
        except FileNotFoundError as error:
            raise RunError(f"{path}: missing; the run is incomplete") from error
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{path}: not a valid mlcli schema ({error})") from error
        if schema.version != SCHEMA_VERSION:
            raise RunError(
                f"{path}: schema version {schema.version}, this mlcli reads version "
                f"{SCHEMA_VERSION}; retrain with this version"
            )
        return schema
