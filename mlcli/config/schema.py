"""The config's schema: strict pydantic models of every section, and its JSON Schema.

Every section forbids unknown keys; a misspelt key is reported with its dotted path and the
closest valid name (`mlcli.config.messages`). Validators check and never rewrite: what the YAML
says is what the run records in its resolved `config.yaml`. The `model:` and `training:`
sections are in `mlcli.config.training`; reading a file is `mlcli.config.loading`.

Example:

```python
config = Config.model_validate({"name": "adult", "data": {"train": "adult.csv"},
                                "target": {"column": "income"}})
```
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlcli.config.strict import StrictModel
from mlcli.config.training import MlpConfig, ModelConfig, TrainingConfig

# Parents merged in before a config is validated (`mlcli.config.inheritance`): no field.
EXTENDS = "extends"
EXTENDS_DESCRIPTION = (
    "Configs this one builds on, merged in order before its own keys: preset names "
    "(models/resnet, training/fast, data/tsv) or YAML files relative to this one. Mappings "
    "merge key by key; lists and other values replace."
)
Task = Literal["binary", "multiclass", "regression"]
FeatureType = Literal["numeric", "categorical", "binary", "text"]


class CsvOptions(StrictModel):
    """How a delimited text file is parsed (pyarrow.csv underneath)."""

    delimiter: str = Field(",", min_length=1, max_length=1, description="One character.")
    header: bool = Field(True, description="The first (non-skipped) line holds column names.")
    columns: list[str] | None = Field(
        None, description="Column names, required when `header` is false."
    )
    na_values: list[str] = Field(
        default_factory=lambda: ["", "NA", "N/A", "NaN", "nan", "null", "NULL"],
        description="Values read as missing.",
    )
    skip_rows: int = Field(0, ge=0, description="Lines skipped before the header or data.")
    trim_whitespace: bool = Field(
        False, description="Strip spaces around text fields (Adult's ', ' separators)."
    )
    quoting: bool = Field(True, description="False: quote characters are ordinary text.")
    quote_char: str = Field('"', min_length=1, max_length=1, description="One character.")

    @model_validator(mode="after")
    def _columns_when_no_header(self) -> CsvOptions:
        if not self.header and not self.columns:
            raise ValueError("`columns` must list the column names when `header` is false")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            duplicates = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise ValueError(f"`columns` names {duplicates} more than once")
        return self


def _overrides(key: str) -> str:
    return f"These files' own `data.csv.{key}`; null: as in `data.csv`."


class CsvOverrides(StrictModel):
    """Per-file CSV settings laid over `data.csv` (for example a banner line to skip)."""

    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description=_overrides("delimiter")
    )
    header: bool | None = Field(None, description=_overrides("header"))
    columns: list[str] | None = Field(None, description=_overrides("columns"))
    na_values: list[str] | None = Field(None, description=_overrides("na_values"))
    skip_rows: int | None = Field(None, ge=0, description=_overrides("skip_rows"))
    trim_whitespace: bool | None = Field(None, description=_overrides("trim_whitespace"))
    quoting: bool | None = Field(None, description=_overrides("quoting"))
    quote_char: str | None = Field(
        None, min_length=1, max_length=1, description=_overrides("quote_char")
    )


class SourceSpec(StrictModel):
    """A table: one or more files (globs allowed) with optional per-file CSV settings."""

    path: str | list[str] = Field(description="A file, a glob, or a list of them.")
    csv: CsvOverrides = Field(
        default_factory=CsvOverrides, description="CSV settings of these files only."
    )


Source = str | list[str] | SourceSpec


class DataConfig(StrictModel):
    """Where the tables are and how to read them. Paths are relative to the config file."""

    train: Source = Field(
        description="The training table: a file, a glob, a list of them, or {path, csv}; "
        ".csv .tsv .txt .parquet, optionally .gz or .zst."
    )
    validation: Annotated[float, Field(gt=0, lt=1)] | Source = Field(
        0.1, description="A fraction of train split off with the seed, or a table like train."
    )
    test: Annotated[float, Field(gt=0, lt=1)] | Source | None = Field(
        None, description="A table like train, or a fraction of train split off with the seed."
    )
    format: Literal["auto", "csv", "parquet"] = Field(
        "auto", description="auto: Parquet for .parquet files, CSV for the others."
    )
    csv: CsvOptions = Field(default_factory=CsvOptions, description="How CSV files are read.")
    streaming: bool | Literal["auto"] = Field(
        "auto",
        description="Stream the tables in record batches instead of loading them whole; "
        "auto: when the training files exceed 1 GiB on disk (mlcli.data.streamed_splits).",
    )
    shuffle_buffer: int = Field(
        131072, ge=1, description="Streaming: rows mixed together when shuffling across files."
    )


class TargetConfig(StrictModel):
    """The column to predict and how its values become classes."""

    column: str = Field(description="The column to predict.")
    task: Task | None = Field(None, description="Inferred from the column when left out.")
    positive_class: str | int | None = Field(
        None, description="Binary task: the class whose probability is reported."
    )
    replace: dict[str, str] = Field(
        default_factory=dict,
        description="Label values renamed before use, e.g. {'>50K.': '>50K'} for adult.test.",
    )
    scale: float = Field(
        1.0,
        gt=0,
        description="Regression: the target is multiplied by this when read (1e-5: $ to $100k).",
    )


class NumericSpec(StrictModel):
    """A number: missing values imputed with the mean plus an indicator, then normalised."""

    type: Literal["numeric"] = Field(description="The feature type.")
    transform: Literal["none", "log", "quantile", "robust"] = Field(
        "none",
        description="`log`: log1p of the value (for non-negative, heavy-tailed columns); "
        "`quantile`: the normal score of the value's quantile in the training split; "
        "`robust`: minus the median, over the interquartile range, then softly clipped to "
        "about +-3 by x / sqrt(1 + (x/3)^2) (RealMLP, Holzmueller et al. 2024).",
    )


class CategoricalSpec(StrictModel):
    """A string or integer category; unseen values go to an out-of-vocabulary slot."""

    type: Literal["categorical"] = Field(description="The feature type.")
    encoding: Literal["auto", "one_hot", "embedding"] = Field(
        "auto", description="auto: one-hot up to 32 values, an embedding above."
    )
    embedding_dim: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Embedding size; null: from the number of values (at most 32).",
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Keep the most frequent values, the rest share the out-of-vocabulary index; "
        "null: features.max_tokens.",
    )
    min_frequency: int = Field(1, ge=1, description="Rarer values go to the OOV slot.")


class BinarySpec(StrictModel):
    """A two-valued column (yes/no, true/false, 0/1), one-hot encoded."""

    type: Literal["binary"] = Field(description="The feature type.")


class TextSpec(StrictModel):
    """Free text: TextVectorization into token ids, averaged embeddings in the model."""

    type: Literal["text"] = Field(description="The feature type.")
    max_tokens: int = Field(
        20000, ge=2, description="Vocabulary size, padding and out-of-vocabulary included."
    )
    sequence_length: int = Field(64, ge=1, description="Tokens kept of each value.")
    embedding_dim: int = Field(32, ge=1, le=1024, description="Size of the token embeddings.")


FeatureSpec = Annotated[
    NumericSpec | CategoricalSpec | BinarySpec | TextSpec, Field(discriminator="type")
]


class FeaturesConfig(BaseModel):
    """Feature types by column (a type name or a mapping), plus `exclude`.

    Columns not named here are inferred from the data.
    """

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FeatureType | FeatureSpec]

    exclude: list[str] = Field(
        default_factory=list, description="Columns left out of the model (ids, leaks)."
    )
    max_tokens: int = Field(
        10000,
        ge=1,
        description="Vocabulary cap of every categorical column without its own max_tokens: "
        "the most frequent values (ties by value), the rest share the out-of-vocabulary index.",
    )

    def declared(self) -> dict[str, NumericSpec | CategoricalSpec | BinarySpec | TextSpec]:
        """The columns given a type in the config, each as its full spec."""
        specs: dict[str, NumericSpec | CategoricalSpec | BinarySpec | TextSpec] = {}
        for column, value in (self.__pydantic_extra__ or {}).items():
            specs[column] = spec_for(value) if isinstance(value, str) else value
        return specs


def spec_for(feature_type: str) -> NumericSpec | CategoricalSpec | BinarySpec | TextSpec:
    """The default spec of a feature type name."""
    kinds: dict[str, type[NumericSpec | CategoricalSpec | BinarySpec | TextSpec]] = {
        "numeric": NumericSpec,
        "categorical": CategoricalSpec,
        "binary": BinarySpec,
        "text": TextSpec,
    }
    return kinds[feature_type](type=feature_type)


class TuneRange(StrictModel):
    """A searched config value: `choices`, or a range from `low` to `high`.

    Integer bounds (`{low: 1, high: 4}`) give integers; write `0.0` for a float range.
    """

    low: int | float | None = Field(None, description="The range's lower bound.")
    high: int | float | None = Field(None, description="The range's upper bound.")
    log: bool = Field(False, description="Sample on a log scale (both bounds above 0).")
    step: float | None = Field(
        None, gt=0.0, description="Only values `low + k * step`; null: any value in the range."
    )
    choices: list[Any] | None = Field(
        None, min_length=1, description="The values tried, of any YAML type."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> TuneRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either `choices` or `low` and `high`, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give `choices`, or both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"`low` {self.low} is above `high` {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a `log` range needs `low` above 0, found {self.low}")
        return self


class TuneConfig(StrictModel):
    """`mlcli tune`: the values searched (dotted config keys) and the metric to optimise."""

    metric: str = Field(
        "validation.loss", description="`<split>.<metric>` of metrics.json, e.g. validation.auc."
    )
    direction: Literal["auto", "minimize", "maximize"] = Field(
        "auto", description="auto: maximise accuracy and auc, minimise the others."
    )
    parameters: dict[str, TuneRange] = Field(
        min_length=1,
        description="A range per dotted config key, e.g. training.learning_rate: "
        "{low: 1.0e-4, high: 1.0e-2, log: true}.",
    )


class OutputConfig(StrictModel):
    """Where runs are written. Relative to the current directory."""

    dir: str = Field(
        "runs", description="Runs go to `<dir>/<name>/<run id>`, relative to the current folder."
    )


class MlflowConfig(StrictModel):
    """An MLflow tracking server or store that receives each run (`mlcli[mlflow]`)."""

    uri: str | None = Field(
        None, description="sqlite:///mlflow.db, http://host:5000, ... (or $MLFLOW_TRACKING_URI)."
    )
    experiment: str | None = Field(None, description="Experiment name; default: the config's name.")


class TrackingConfig(StrictModel):
    """Experiment trackers that receive parameters, metrics, artifacts and the model."""

    mlflow: MlflowConfig | None = Field(None, description="null: no MLflow.")


class Config(StrictModel):
    """The whole config of one model."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=100,
        description="The model's name: its runs go to `<output.dir>/<name>/`.",
    )
    seed: int = Field(
        42, ge=0, le=2**31 - 1, description="Seeds the splits, the weights, shuffling and tuning."
    )
    data: DataConfig = Field(description="Where the tables are and how to read them.")
    target: TargetConfig = Field(description="The column to predict.")
    features: FeaturesConfig = Field(
        default_factory=FeaturesConfig,
        description="Feature types by column; columns not named are inferred from the data.",
    )
    model: ModelConfig = Field(
        default_factory=MlpConfig, description="The network: mlp, resnet or ft_transformer."
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="How the model is fitted."
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where runs go.")
    tune: TuneConfig | None = Field(None, description="Search ranges for `mlcli tune`.")
    tracking: TrackingConfig | None = Field(None, description="MLflow tracking of each run.")

    @field_validator("features")
    @classmethod
    def _features_are_not_excluded(cls, features: FeaturesConfig) -> FeaturesConfig:
        both = sorted(set(features.declared()) & set(features.exclude))
        if both:
            raise ValueError(f"{both} are both given a type and excluded")
        return features

    @model_validator(mode="after")
    def _target_is_not_a_feature(self) -> Config:
        target = self.target.column
        if target in self.features.declared():
            raise ValueError(
                f"the target column {target!r} is also listed under `features`; remove it there"
            )
        return self


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema (draft 2020-12), for YAML language servers and CI linting.

    It adds `extends` (`mlcli.config.inheritance`), which is merged away before the config is
    validated; a file with `extends` need not hold the required top-level keys itself (a parent
    may), though every key it does hold is checked.
    """
    from mlcli import __version__

    schema = Config.model_json_schema()
    required = schema.pop("required")
    entry = {"type": "string", "minLength": 1}
    extends = {
        "description": EXTENDS_DESCRIPTION,
        "anyOf": [entry, {"type": "array", "items": entry}],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"mlcli {__version__} config",
        **{key: value for key, value in schema.items() if key not in ("title", "properties")},
        "properties": {EXTENDS: extends, **schema["properties"]},
        "anyOf": [{"required": [EXTENDS]}, {"required": required}],
    }
