"""The `model:` and `training:` sections: which network is built, and how it is fitted.

`model` is one of three families, told apart by its `type` (`mlp` when left out); each family
forbids the keys of the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from mlcli.config.strict import StrictModel

Activation = Literal["relu", "gelu", "silu", "tanh", "elu", "selu"]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class NumericEmbeddingConfig(StrictModel):
    """How numeric columns enter the network (Gorishniy et al. 2022).

    `none`: the normalised value itself; `piecewise_linear`: the value encoded over quantile
    bins of the training split, then a learned linear map and ReLU per feature (PLE-Q-LR);
    `periodic`: sin/cos of learned frequencies, then a learned linear map and ReLU (PLR).
    """

    type: Literal["none", "piecewise_linear", "periodic"] = Field(
        "none",
        description="none: the normalised value; piecewise_linear: quantile bins, then a "
        "linear map and ReLU; periodic: sin/cos of learned frequencies, then the same.",
    )
    dim: int = Field(16, ge=1, le=1024, description="Embedding size per numeric feature.")
    bins: int = Field(32, ge=2, le=128, description="piecewise_linear: bins per feature, at most.")
    binning: Literal["quantile", "tree"] = Field(
        "quantile",
        description="piecewise_linear: bin edges at quantiles of the training split, or at the "
        "thresholds of a decision tree on the target (max `bins` leaves) fit on the training "
        "split only (Gorishniy et al. 2022); either way the edges are stored in the model.",
    )
    frequencies: int = Field(16, ge=1, le=256, description="periodic: frequencies per feature.")
    frequency_scale: float = Field(
        0.1, gt=0.0, description="periodic: standard deviation of the initial frequencies."
    )


_NUMERIC_EMBEDDING = "How numeric columns enter the network."
_ENSEMBLE = (
    "Members trained at once in one network (TabM, Gorishniy et al. 2024): each dense layer "
    "shares its weights and gives each member its own scaling vectors and biases, each member "
    "has its own head, the loss is the mean of the members' losses, and the saved model "
    "outputs the mean of their predictions. 1: a single network."
)
Ensemble = Annotated[int, Field(ge=1, le=64)]


class MlpConfig(StrictModel):
    """The classic MLP over the encoded features (the default)."""

    type: Literal["mlp"] = Field("mlp", description="The model family: a plain MLP.")
    hidden_units: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [128, 64], description="Units of each dense layer, in order."
    )
    activation: Activation = Field("relu", description="Activation of each dense layer.")
    dropout: Dropout = Field(0.0, description="Dropout after each dense layer.")
    batch_norm: bool = Field(
        False, description="Batch normalisation after each dense layer, before its activation."
    )
    l2: float = Field(0.0, ge=0.0, description="L2 penalty on the dense layers' kernels.")
    numeric_embedding: NumericEmbeddingConfig = Field(
        default_factory=NumericEmbeddingConfig, description=_NUMERIC_EMBEDDING
    )
    ensemble: Ensemble = Field(1, description=_ENSEMBLE)


class ResNetConfig(StrictModel):
    """A residual MLP (Gorishniy et al. 2021): blocks of norm, dense, dropout, dense, add."""

    type: Literal["resnet"] = Field(description="The model family: a residual MLP.")
    width: int = Field(128, ge=1, description="Width of the residual stream.")
    blocks: int = Field(2, ge=1, le=64, description="Residual blocks.")
    hidden_factor: float = Field(2.0, gt=0.0, description="Hidden width / residual width.")
    activation: Activation = Field(
        "relu", description="Activation inside each block and at the end."
    )
    hidden_dropout: Dropout = Field(0.1, description="Dropout of each block's hidden layer.")
    residual_dropout: Dropout = Field(
        0.0, description="Dropout of each block's output, before it is added to the stream."
    )
    numeric_embedding: NumericEmbeddingConfig = Field(
        default_factory=NumericEmbeddingConfig, description=_NUMERIC_EMBEDDING
    )
    ensemble: Ensemble = Field(1, description=_ENSEMBLE)


class FTTransformerConfig(StrictModel):
    """A small FT-Transformer (Gorishniy et al. 2021): one token per feature plus [CLS]."""

    type: Literal["ft_transformer"] = Field(description="The model family: an FT-Transformer.")
    token_dim: int = Field(64, ge=4, le=1024, description="Token size; a multiple of `heads`.")
    blocks: int = Field(2, ge=1, le=16, description="Transformer blocks.")
    heads: int = Field(4, ge=1, le=64, description="Attention heads per block.")
    ffn_factor: float = Field(4 / 3, gt=0.0, description="ReGLU hidden size / token size.")
    attention_dropout: Dropout = Field(0.2, description="Dropout of the attention weights.")
    ffn_dropout: Dropout = Field(0.1, description="Dropout of the feed-forward hidden layer.")
    residual_dropout: Dropout = Field(
        0.0, description="Dropout of each sublayer's output, before it is added to the stream."
    )
    numeric_embedding: NumericEmbeddingConfig = Field(
        default_factory=NumericEmbeddingConfig, description=_NUMERIC_EMBEDDING
    )

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

    monitor: str = Field(
        "val_loss",
        description="A metric training logs, with or without `val_`: loss and accuracy, "
        "auc (binary), rmse and mae (regression).",
    )
    patience: int = Field(3, ge=0, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="The least change that counts as better.")
    restore_best_weights: bool = Field(
        True, description="End with the weights of the best epoch, not the last."
    )


# `--device` and `training.device`: every GPU or else the CPU, the CPU, N logical CPU devices
# (MirroredStrategy on one CPU, for tests), every GPU, or the GPUs of the given indices.
DEVICE_PATTERN = r"^(auto|cpu|cpu:[1-9][0-9]*|gpu|gpu:[0-9]+(,[0-9]+)*)$"


class TrainingConfig(StrictModel):
    """How the model is fitted."""

    epochs: int = Field(10, ge=1, le=100000, description="Passes over the training split, at most.")
    batch_size: int = Field(
        256, ge=1, description="Rows per step per replica; the global batch is this times replicas."
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field(
        "adamw", description="The Keras optimizer."
    )
    learning_rate: float = Field(
        0.001, gt=0.0, le=10.0, description="The optimizer's initial learning rate."
    )
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
    early_stopping: EarlyStoppingConfig | None = Field(
        default_factory=EarlyStoppingConfig, description="null: train every epoch."
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Classification: the targets move this far towards the uniform "
        "distribution over the classes (0: none); ignored for regression.",
    )
    class_weight: Literal["none", "balanced"] = Field(
        "none",
        description="balanced: weight each class by rows / (classes * its rows), "
        "for imbalanced classification.",
    )
    steps_per_execution: int = Field(
        32,
        ge=1,
        description="Batches per compiled call: fewer Python round trips (1 with several "
        "replicas: --device cpu:N or several GPUs).",
    )
    jit_compile: bool = Field(False, description="XLA-compile the training step.")
    deterministic: bool = Field(
        True, description="TensorFlow op determinism: the same seed gives the same run."
    )
    tensorboard: bool = Field(
        False, description="TensorBoard logs under `<run>/logs` (pip install 'mlcli[tensorboard]')."
    )
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="auto | cpu | cpu:N | gpu | gpu:0,1; --device overrides it.",
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="Mixed precision computes in 16 bits; the output stays float32."
    )
    calibration: Literal["none", "temperature", "isotonic"] = Field(
        "none",
        description="Calibrate the probabilities on the validation split after training, inside "
        "the saved model: temperature (one fitted temperature; binary and multiclass) or "
        "isotonic (a fitted increasing curve; binary only).",
    )
