"""The YAML config: a strict pydantic schema, `${VAR}` filling and `--set` overrides.

Every section forbids unknown keys; a misspelt key is reported with its dotted path and the
closest valid name. Validators check and never rewrite: what the YAML says is what the run
records in its resolved `config.yaml`.

Example:

```python
config = load_config("examples/adult/config.yaml", overrides=["training.epochs=3"])
```
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from mlcli.errors import ConfigError

Task = Literal["binary", "multiclass", "regression"]
FeatureType = Literal["numeric", "categorical", "binary", "text"]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, fields are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    quote_char: str = Field('"', min_length=1, max_length=1)

    @model_validator(mode="after")
    def _columns_when_no_header(self) -> CsvOptions:
        if not self.header and not self.columns:
            raise ValueError("`columns` must list the column names when `header` is false")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            duplicates = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise ValueError(f"`columns` names {duplicates} more than once")
        return self


class CsvOverrides(StrictModel):
    """Per-file CSV settings laid over `data.csv` (for example a banner line to skip)."""

    delimiter: str | None = Field(None, min_length=1, max_length=1)
    header: bool | None = None
    columns: list[str] | None = None
    na_values: list[str] | None = None
    skip_rows: int | None = Field(None, ge=0)
    trim_whitespace: bool | None = None
    quoting: bool | None = None
    quote_char: str | None = Field(None, min_length=1, max_length=1)


class SourceSpec(StrictModel):
    """A table: one or more files (globs allowed) with optional per-file CSV settings."""

    path: str | list[str]
    csv: CsvOverrides = Field(default_factory=CsvOverrides)


Source = str | list[str] | SourceSpec


class DataConfig(StrictModel):
    """Where the tables are and how to read them. Paths are relative to the config file."""

    train: Source
    validation: Annotated[float, Field(gt=0, lt=1)] | Source = 0.1
    test: Annotated[float, Field(gt=0, lt=1)] | Source | None = Field(
        None, description="A table like train, or a fraction of train split off with the seed."
    )
    format: Literal["auto", "csv", "parquet"] = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
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

    column: str
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

    type: Literal["numeric"]
    transform: Literal["none", "log", "quantile"] = Field(
        "none",
        description="`log`: log1p of the value (for non-negative, heavy-tailed columns); "
        "`quantile`: the normal score of the value's quantile in the training split.",
    )


class CategoricalSpec(StrictModel):
    """A string or integer category; unseen values go to an out-of-vocabulary slot."""

    type: Literal["categorical"]
    encoding: Literal["auto", "one_hot", "embedding"] = "auto"
    embedding_dim: int | None = Field(None, ge=1, le=1024)
    max_tokens: int | None = Field(None, ge=1, description="Keep the most frequent values.")
    min_frequency: int = Field(1, ge=1, description="Rarer values go to the OOV slot.")


class BinarySpec(StrictModel):
    """A two-valued column (yes/no, true/false, 0/1), one-hot encoded."""

    type: Literal["binary"]


class TextSpec(StrictModel):
    """Free text: TextVectorization into token ids, averaged embeddings in the model."""

    type: Literal["text"]
    max_tokens: int = Field(20000, ge=2)
    sequence_length: int = Field(64, ge=1)
    embedding_dim: int = Field(32, ge=1, le=1024)


FeatureSpec = Annotated[
    NumericSpec | CategoricalSpec | BinarySpec | TextSpec, Field(discriminator="type")
]


class FeaturesConfig(BaseModel):
    """Feature types by column (a type name or a mapping), plus `exclude`.

    Columns not named here are inferred from the data.
    """

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FeatureType | FeatureSpec]

    exclude: list[str] = Field(default_factory=list)

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


Activation = Literal["relu", "gelu", "silu", "tanh", "elu", "selu"]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class NumericEmbeddingConfig(StrictModel):
    """How numeric columns enter the network (Gorishniy et al. 2022).

    `none`: the normalised value itself; `piecewise_linear`: the value encoded over quantile
    bins of the training split, then a learned linear map and ReLU per feature (PLE-Q-LR);
    `periodic`: sin/cos of learned frequencies, then a learned linear map and ReLU (PLR).
    """

    type: Literal["none", "piecewise_linear", "periodic"] = "none"
    dim: int = Field(16, ge=1, le=1024, description="Embedding size per numeric feature.")
    bins: int = Field(32, ge=2, le=128, description="piecewise_linear: quantile bins.")
    frequencies: int = Field(16, ge=1, le=256, description="periodic: frequencies per feature.")
    frequency_scale: float = Field(
        0.1, gt=0.0, description="periodic: standard deviation of the initial frequencies."
    )


class MlpConfig(StrictModel):
    """The classic MLP over the encoded features (the default)."""

    type: Literal["mlp"] = "mlp"
    hidden_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 64])
    activation: Activation = "relu"
    dropout: Dropout = 0.0
    batch_norm: bool = False
    l2: float = Field(0.0, ge=0.0)
    numeric_embedding: NumericEmbeddingConfig = Field(default_factory=NumericEmbeddingConfig)


class ResNetConfig(StrictModel):
    """A residual MLP (Gorishniy et al. 2021): blocks of norm, dense, dropout, dense, add."""

    type: Literal["resnet"]
    width: int = Field(128, ge=1, description="Width of the residual stream.")
    blocks: int = Field(2, ge=1, le=64)
    hidden_factor: float = Field(2.0, gt=0.0, description="Hidden width / residual width.")
    activation: Activation = "relu"
    hidden_dropout: Dropout = 0.1
    residual_dropout: Dropout = 0.0
    numeric_embedding: NumericEmbeddingConfig = Field(default_factory=NumericEmbeddingConfig)


class FTTransformerConfig(StrictModel):
    """A small FT-Transformer (Gorishniy et al. 2021): one token per feature plus [CLS]."""

    type: Literal["ft_transformer"]
    token_dim: int = Field(64, ge=4, le=1024, description="Token size; a multiple of `heads`.")
    blocks: int = Field(2, ge=1, le=16)
    heads: int = Field(4, ge=1, le=64)
    ffn_factor: float = Field(4 / 3, gt=0.0, description="ReGLU hidden size / token size.")
    attention_dropout: Dropout = 0.2
    ffn_dropout: Dropout = 0.1
    residual_dropout: Dropout = 0.0
    numeric_embedding: NumericEmbeddingConfig = Field(default_factory=NumericEmbeddingConfig)

    @model_validator(mode="after")
    def _heads_divide_token_dim(self) -> FTTransformerConfig:
        if self.token_dim % self.heads:
            raise ValueError(f"token_dim {self.token_dim} is not a multiple of heads {self.heads}")
        return self


MODEL_TYPES = ("mlp", "resnet", "ft_transformer")


def _model_type(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("type", "mlp"))
    return str(getattr(value, "type", "mlp"))


ModelConfig = Annotated[
    Annotated[MlpConfig, Tag("mlp")]
    | Annotated[ResNetConfig, Tag("resnet")]
    | Annotated[FTTransformerConfig, Tag("ft_transformer")],
    Discriminator(_model_type),
]


class EarlyStoppingConfig(StrictModel):
    """Stop when the monitored metric stops improving; the best weights are restored."""

    monitor: str = "val_loss"
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best_weights: bool = True


# `--device` and `training.device`: every GPU or else the CPU, the CPU, N logical CPU devices
# (MirroredStrategy on one CPU, for tests), every GPU, or the GPUs of the given indices.
DEVICE_PATTERN = r"^(auto|cpu|cpu:[1-9][0-9]*|gpu|gpu:[0-9]+(,[0-9]+)*)$"


class TrainingConfig(StrictModel):
    """How the model is fitted."""

    epochs: int = Field(10, ge=1, le=100000)
    batch_size: int = Field(
        256, ge=1, description="Rows per step per replica; the global batch is this times replicas."
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adamw"
    learning_rate: float = Field(0.001, gt=0.0, le=10.0)
    weight_decay: float = Field(
        1e-4,
        ge=0.0,
        le=1.0,
        description="Decoupled weight decay of the weights (not of biases or norm scales).",
    )
    learning_rate_schedule: Literal["none", "cosine", "reduce_on_plateau"] = Field(
        "reduce_on_plateau",
        description="cosine: decay to 0 over `epochs`; reduce_on_plateau: halve it after "
        "half the early-stopping patience (at least 1 epoch) without improvement.",
    )
    early_stopping: EarlyStoppingConfig | None = Field(default_factory=EarlyStoppingConfig)
    class_weight: Literal["none", "balanced"] = "none"
    steps_per_execution: int = Field(
        32, ge=1, description="Batches per compiled call: fewer Python round trips."
    )
    jit_compile: bool = Field(False, description="XLA-compile the training step.")
    deterministic: bool = Field(
        True, description="TensorFlow op determinism: the same seed gives the same run."
    )
    tensorboard: bool = Field(
        False, description="TensorBoard logs under <run>/logs (pip install 'mlcli[tensorboard]')."
    )
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="auto | cpu | cpu:N | gpu | gpu:0,1; --device overrides it.",
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="Mixed precision computes in 16 bits; the output stays float32."
    )


class TuneRange(StrictModel):
    """A searched config value: `choices`, or a range from `low` to `high`.

    Integer bounds (`{low: 1, high: 4}`) give integers; write `0.0` for a float range.
    """

    low: int | float | None = None
    high: int | float | None = None
    log: bool = Field(False, description="Sample on a log scale (both bounds above 0).")
    step: float | None = Field(None, gt=0.0)
    choices: list[Any] | None = Field(None, min_length=1)

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
    parameters: dict[str, TuneRange] = Field(min_length=1)


class OutputConfig(StrictModel):
    """Where runs are written. Relative to the current directory."""

    dir: str = "runs"


class MlflowConfig(StrictModel):
    """An MLflow tracking server or store that receives each run (`mlcli[mlflow]`)."""

    uri: str | None = Field(
        None, description="sqlite:///mlflow.db, http://host:5000, ... (or $MLFLOW_TRACKING_URI)."
    )
    experiment: str | None = Field(None, description="Experiment name; default: the config's name.")


class TrackingConfig(StrictModel):
    """Experiment trackers that receive parameters, metrics, artifacts and the model."""

    mlflow: MlflowConfig | None = None


class Config(StrictModel):
    """The whole config of one model."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    data: DataConfig
    target: TargetConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=MlpConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
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


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _fill_env(value: Any, path: str) -> Any:
    """Fills `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document."""
    if isinstance(value, dict):
        return {k: _fill_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"config key `{path}`: environment variable ${{{name}}} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )

    return _ENV_PATTERN.sub(substitute, value)


_FEATURE_SPECS: tuple[type[BaseModel], ...] = (NumericSpec, CategoricalSpec, BinarySpec, TextSpec)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [
        a
        for a in _flatten_annotation(annotation)
        if isinstance(a, type) and issubclass(a, BaseModel)
    ]


def _walk(path: Iterable[Any]) -> tuple[list[type[BaseModel]], Any]:
    """The config sections a key path leads into, and the annotation of its last field."""
    candidates: list[type[BaseModel]] = [Config]
    annotation: Any = None
    for key in path:
        if isinstance(key, int):
            continue
        following: list[type[BaseModel]] = []
        annotation = None
        for model in candidates:
            field = model.model_fields.get(str(key))
            if field is not None:
                annotation = field.annotation
                following.extend(_models_in(field.annotation))
            elif key in _literal_tags(model):
                following.append(model)  # a tagged union names its member in the path
            elif model is FeaturesConfig:
                following.extend(_FEATURE_SPECS)  # a column name
        candidates = following
    return candidates, annotation


def apply_overrides(document: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Returns a copy of a raw config with `key.path=value` overrides applied.

    Values are parsed as YAML (`3`, `true`, `[64, 32]`) unless the schema says the key is a
    string, in which case the text is kept as it is.
    """
    result = _deep_copy(document)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set {override!r}: expected KEY=VALUE with a dotted key, "
                "e.g. --set training.epochs=3"
            )
        path = key.strip().split(".")
        _, annotation = _walk(path)
        value: Any
        if annotation is str or annotation == str | None:
            value = text
        else:
            try:
                value = yaml.safe_load(text) if text != "" else ""
            except yaml.YAMLError:
                value = text
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the config section that holds `loc`'s last key."""
    sections, _ = _walk(loc[:-1])
    return sorted({name for section in sections for name in section.model_fields})


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _flatten_annotation(annotation: Any) -> list[Any]:
    found: list[Any] = []
    for member in _union_members(annotation):
        if typing.get_origin(member) is Annotated:
            found.extend(_flatten_annotation(typing.get_args(member)[0]))
        elif typing.get_origin(member) in (typing.Union, types.UnionType):
            found.extend(_flatten_annotation(member))
        elif typing.get_origin(member) in (list, dict):
            found.extend(_flatten_annotation(typing.get_args(member)[-1]))
        else:
            found.append(member)
    return found


def _literal_tags(model: type[BaseModel]) -> list[str]:
    field = model.model_fields.get("type")
    if field is None:
        return []
    return [str(a) for a in typing.get_args(field.annotation)]


# Pydantic names the member of a union it tried inside the location; those are not keys.
_UNION_MEMBER_NAMES = {
    "str",
    "int",
    "float",
    "bool",
    "list[str]",
    "SourceSpec",
    "constrained-float",
}


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item) in _UNION_MEMBER_NAMES or str(item).startswith(
            ("function-", "tagged-union", "literal[")
        ):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: `file: config key `a.b`: what is wrong (did you mean ...)`."""
    problems = []
    for problem in error.errors():
        loc = tuple(
            item
            for item in problem["loc"]
            if not str(item).startswith(("tagged-union[", "literal[", "function-"))
        )
        if len(loc) >= 3 and loc[0] == "features" and loc[2] in typing.get_args(FeatureType):
            loc = loc[:2] + loc[3:]  # the tag pydantic adds inside a feature spec
        displayed = loc
        if len(loc) >= 2 and loc[0] == "model" and loc[1] in MODEL_TYPES:
            displayed = loc[:1] + loc[2:]  # the model family's tag (kept in loc for valid keys)
        problems.append((_format_loc(displayed), loc, problem))
    keys = [key for key, _, _ in problems]
    lines: list[str] = []
    reported: set[str] = set()
    for key, loc, problem in problems:
        found = problem.get("input")
        deeper = any(other.startswith(key + ".") for other in keys)
        if problem["type"] != "extra_forbidden" and (
            (isinstance(found, dict | list) and deeper) or key in reported
        ):
            continue  # another member of a union that did not fit; one problem is enough
        reported.add(key)
        where = f"config key `{key}`" if loc else "config"
        if problem["type"] == "extra_forbidden":
            unknown = str(loc[-1])
            allowed = _allowed_keys(loc)
            hint = difflib.get_close_matches(unknown, allowed, n=1, cutoff=0.6)
            message = f"{where} is not allowed"
            message += f" (did you mean `{hint[0]}`?)" if hint else ""
            if allowed:
                message += f"; valid keys here: {', '.join(allowed)}"
        elif problem["type"] == "missing":
            message = f"{where} is required but missing"
        elif problem["type"] == "literal_error":
            options = re.findall(r"'([^']*)'", problem.get("ctx", {}).get("expected", ""))
            hint = difflib.get_close_matches(str(found), options, n=1, cutoff=0.6)
            message = f"{where}: expected one of {', '.join(options)}, found {found!r}"
            message += f" (did you mean {hint[0]!r}?)" if hint else ""
        elif problem["type"] == "union_tag_invalid":
            tag = str(problem.get("ctx", {}).get("tag"))
            hint = difflib.get_close_matches(tag, MODEL_TYPES, n=1, cutoff=0.6)
            message = f"config key `{key}.type`: expected one of {', '.join(MODEL_TYPES)}, "
            message += f"found {tag!r}"
            message += f" (did you mean {hint[0]!r}?)" if hint else ""
        elif problem["type"] == "value_error":
            message = f"{where}: {problem['msg'].removeprefix('Value error, ')}"
        else:
            shown = repr(found) if not isinstance(found, dict | list) else type(found).__name__
            message = f"{where}: {problem['msg']} (found {shown})"
        if message not in lines:
            lines.append(message)
    extra = f" (+{len(lines) - 5} more)" if len(lines) > 5 else ""
    return f"{source}: " + "; ".join(lines[:5]) + extra


def parse_config(
    document: Any, *, source: str = "config", relative_to: Path | None = None
) -> Config:
    """Validates a parsed YAML document into a `Config`, raising `ConfigError` on any problem.

    Relative data paths are resolved against `relative_to` (the working directory by default).
    """
    if not isinstance(document, Mapping):
        kind = "empty" if document is None else type(document).__name__
        raise ConfigError(f"{source}: the config must be a YAML mapping of keys, found {kind}")
    try:
        config = Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from error
    return resolve_paths(config, relative_to or Path.cwd())


def resolve_paths(config: Config, folder: Path) -> Config:
    """The config with its data paths made absolute, relative ones taken from `folder`.

    Called once, when a config is parsed: everything below `config/` sees absolute paths.
    """

    def absolute(spec: Any) -> Any:
        if isinstance(spec, SourceSpec):
            return spec.model_copy(update={"path": absolute(spec.path)})
        if isinstance(spec, list):
            return [absolute(p) for p in spec]
        if isinstance(spec, str):
            return str((folder / Path(spec).expanduser()).resolve())
        return spec

    data = config.data.model_copy(
        update={
            "train": absolute(config.data.train),
            "validation": absolute(config.data.validation),
            "test": absolute(config.data.test),
        }
    )
    return config.model_copy(update={"data": data})


def read_yaml(path: Path) -> Any:
    """Reads a YAML file with `yaml.safe_load`, reporting the line and column of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except IsADirectoryError as error:
        raise ConfigError(f"{path}: is a directory, expected a YAML config file") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror}") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: YAML does not parse{where}: {problem}") from error


def load_config(
    path: str | Path,
    *,
    overrides: Iterable[str] = (),
) -> Config:
    """Reads, fills and validates a config file; relative data paths are taken from its folder."""
    config_path = Path(path)
    document = load_document(config_path, overrides=overrides)
    return parse_config(document, source=str(config_path), relative_to=config_path.resolve().parent)


def load_document(path: Path, *, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """A config file as a raw mapping, `${VAR}` filled and overrides applied, not validated."""
    document = read_yaml(path)
    if document is not None and not isinstance(document, Mapping):
        raise ConfigError(
            f"{path}: the config must be a YAML mapping of keys, found {type(document).__name__}"
        )
    document = _fill_env(dict(document or {}), "")
    return apply_overrides(document, overrides)


def config_to_yaml(config: Config) -> str:
    """The config as YAML, in schema order, with unset defaults written out."""
    return yaml.safe_dump(
        config.model_dump(mode="json", exclude_none=False), sort_keys=False, allow_unicode=True
    )
