"""Fitting with TensorFlow: `model.fit` on `tf.data`, then the composed model saved and scored.

`fit_run` takes the run's `TrainingData` (`mlcli.training.data`), whether its tables are in
memory or streamed: the core network trains on encoded batches (`mlcli.training.datasets`),
and the saved model puts the preprocessing layers in front of it.

Imported only by commands that train, after TensorFlow has been imported quietly.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcli import files
from mlcli._tensorflow import import_tensorflow
from mlcli.config.schema import Config
from mlcli.errors import ConfigError, TrainingDivergedError
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs

tf = import_tensorflow(
    start=False
)  # devices are chosen first: mlcli.training.devices.place starts it
import keras  # noqa: E402

from mlcli.ensemble_layers import MemberMean  # noqa: E402
from mlcli.inference.comparison import compare_outputs  # noqa: E402
from mlcli.models.binning import fitted_bin_edges  # noqa: E402
from mlcli.models.core import build_core, calibrated_core, compose  # noqa: E402
from mlcli.preprocessing.inputs import CORE_MODEL  # noqa: E402
from mlcli.preprocessing.layers import build_preprocessor, keyed_model  # noqa: E402
from mlcli.training import distributed  # noqa: E402
from mlcli.training.calibration import fit_calibration  # noqa: E402
from mlcli.training.callbacks import (  # noqa: E402
    EpochSeeding,
    completed_epochs,
    kept_epoch,
    run_callbacks,
)
from mlcli.training.compile import compile_core, epoch_auc  # noqa: E402
from mlcli.training.data import TrainingData  # noqa: E402
from mlcli.training.devices import Placement, place, precision  # noqa: E402

if TYPE_CHECKING:
    from mlcli.training.datasets import Split

# Rows per batch of validation and the final evaluation: 16384 took 0.5-0.8 s for 900k rows
# here, 4096 0.8-0.9 s
EVALUATION_BATCH_ROWS = 16384

# The composed model must reproduce the core's outputs on the encoded data, up to float32
# rounding: the largest difference, over the largest output's magnitude (at least 1), at most
# this. The Arrow encoding and the Keras layers may round an input differently by an ulp, and
# periodic numeric embeddings amplify that: on the Adult example's trained models, encoded
# inputs moved by 1 float32 ulp move the outputs by up to 6.7e-05 (32k rows) and 8.6e-05 (1M
# rows), by 4 ulps up to 3.8e-04. Measured differences: 1.2e-07 on Adult, 0 on the other
# shipped examples, 5.0e-05 on a 1M-row Adult-like table (1.81e-05 reported in issue 15). A
# wrong or missing encoding step moves outputs by far more.
COMPOSITION_TOLERANCE = 1e-3


@dataclass
class _Fitting:
    """What fitting works on: the placement, the preprocessor, the splits and the core."""

    placement: Placement
    preprocessor: keras.Model
    train: Split
    validation: Split
    test: Split | None
    core: keras.Model
    batch_size: int  # the global batch
    steps: int  # per epoch


def class_weights(data: TrainingData, mode: str) -> dict[int, float] | None:
    """`training.class_weight`: balanced weights `rows / (classes * count)` per class index."""
    counts = data.class_counts
    if mode != "balanced" or data.schema.target.task == "regression":
        return None
    rows = data.rows["train"]
    return {
        index: float(rows / (len(counts) * count)) if count else 0.0
        for index, count in enumerate(counts)
    }


def fit_run(
    config: Config,
    data: TrainingData,
    run: runs.Run,
    *,
    reporter: Reporter,
    device: str | None,
    verbose: bool,
) -> dict[str, Any]:
    """Fits, saves model.keras, history, metrics and plots into the run; returns manifest fields."""
    started = time.monotonic()
    fitting = _prepare(config, data, device=device, verbose=verbose, reporter=reporter)
    encoded_at = time.monotonic()
    reporter.event("device", fitting.placement.summary(config.training))
    first_epoch = completed_epochs(run.file(runs.CHECKPOINTS))
    _truncate_history(run.file(runs.HISTORY), first_epoch)
    if first_epoch:
        reporter.event("resume", f"continuing after epoch {first_epoch} of {run.path}")
    kept = _fit(config, data, run, fitting, reporter=reporter, first_epoch=first_epoch)
    fitted_at = time.monotonic()
    seconds = {
        "prepare": encoded_at - started,  # devices, and the layers' encoding if needed
        "fit": fitted_at - encoded_at,
    }
    composition, calibration = _save_and_evaluate(
        config, data, run, fitting, kept=kept, seconds=seconds
    )
    epochs_fitted = max(1, kept["epochs_run"] - first_epoch)
    return {
        "device": fitting.placement.describe(config.training),
        "epochs_run": kept["epochs_run"],
        # the cost of an epoch, validation included: what `model.ensemble` multiplies
        "seconds_per_epoch": seconds["fit"] / epochs_fitted,
        "ensemble": getattr(config.model, "ensemble", 1),
        "kept_epoch": kept,
        "resumed_after_epoch": first_epoch or None,
        "composition_max_abs_difference": composition["max_abs_difference"],
        "checks": {"composition": composition},
        "calibration": calibration,
        "seconds": seconds,
    }


def _prepare(
    config: Config, data: TrainingData, *, device: str | None, verbose: bool, reporter: Reporter
) -> _Fitting:
    """Devices placed, seeds set, the splits encoded (if `load` did not) and the core compiled."""
    started = time.monotonic()
    placement = place(device or config.training.device, verbose=verbose)
    keras.utils.set_random_seed(config.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    preprocessor = build_preprocessor(data.schema)
    train, validation, test = data.model_splits(preprocessor)
    if not data.arrow_encoded:
        elapsed = time.monotonic() - started
        reporter.event("encoded", f"{train.rows} training rows in {elapsed:.1f}s")
    batch_size = config.training.batch_size * placement.replicas  # the global batch
    steps = math.ceil(train.rows / batch_size)
    task = data.schema.target.task
    bin_edges = _bin_edges(config, data, train)
    with placement.strategy.scope(), precision(config.training.precision):
        core = build_core(
            data.schema, config.model, encoded_shapes=train.shapes, bin_edges=bin_edges
        )
        compile_core(core, task, config.training, steps_per_epoch=steps)
    return _Fitting(placement, preprocessor, train, validation, test, core, batch_size, steps)


def _bin_edges(config: Config, data: TrainingData, train: Split) -> list[list[float]] | None:
    """Tree bins (`model.numeric_embedding.binning: tree`) fitted on the training split only."""
    from mlcli.preprocessing.inputs import NUMERIC
    from mlcli.training.datasets import EncodedSplit

    embedding = config.model.numeric_embedding
    if embedding.type != "piecewise_linear" or embedding.binning != "tree":
        return None
    if not isinstance(train, EncodedSplit):
        raise ConfigError(
            "config key `model.numeric_embedding.binning`: tree bins are fitted on the training "
            "split in memory, found a streamed one; set data.streaming: false, or binning: quantile"
        )
    numeric = train.features.get(NUMERIC)
    return fitted_bin_edges(data.schema, config.model, numeric, train.labels, seed=config.seed)


def _fit(
    config: Config,
    data: TrainingData,
    run: runs.Run,
    fitting: _Fitting,
    *,
    reporter: Reporter,
    first_epoch: int,
) -> dict[str, Any]:
    """`model.fit` (or the multi-worker loop) from the checkpoint's epoch; the kept epoch."""
    shuffle = EpochSeeding(fitting.train, batch_size=fitting.batch_size, seed=config.seed)
    validation_rows = max(fitting.batch_size, EVALUATION_BATCH_ROWS)
    callbacks = run_callbacks(config, run, reporter, steps_per_epoch=fitting.steps)
    arguments: dict[str, Any] = dict(
        x=shuffle.dataset,
        validation_data=fitting.validation.dataset(batch_size=validation_rows),
        epochs=config.training.epochs,
        class_weight=class_weights(data, config.training.class_weight),
        callbacks=[shuffle, *callbacks],
    )
    if fitting.placement.multi_worker:  # Keras's fit does not run under MultiWorkerMirroredStrategy
        history = distributed.fit(fitting.core, fitting.placement.strategy, **arguments)
    else:
        history = fitting.core.fit(**arguments, verbose=0)
    check_finite_history(history.history, first_epoch=first_epoch, run=run)
    epochs_run = first_epoch + len(history.history.get("loss", []))
    return kept_epoch(callbacks, epochs_run=epochs_run, epochs=config.training.epochs)


def _save_and_evaluate(
    config: Config,
    data: TrainingData,
    run: runs.Run,
    fitting: _Fitting,
    *,
    kept: dict[str, Any],
    seconds: dict[str, float],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Saves model.keras and metrics.json, draws the learning curves; the composition check,
    and the calibration's record (None without `training.calibration`).

    Under MultiWorkerMirroredStrategy the replicated core is evaluated by the multi-worker loop
    on every worker, and an unreplicated copy is saved (only the chief's run folder is kept).
    With `training.calibration` the layer is fitted on the validation split and the metrics,
    like the saved model, are those of the calibrated probabilities. Adds the seconds of
    `save`, `evaluate` and `check` to `seconds`.
    """
    started = time.monotonic()
    plotted = _plot_in_background(run, kept_epoch=kept["epoch"])
    core, schema, strategy = fitting.core, data.schema, fitting.placement.strategy
    if schema.target.task == "binary" and not epoch_auc(config.training):
        with strategy.scope():  # the final metrics include AUC
            compile_core(core, schema.target.task, config.training, for_evaluation=True)
    saved = distributed.local_copy(core) if fitting.placement.multi_worker else core
    if any(isinstance(layer, MemberMean) for layer in saved.layers):
        # an uncompiled view of the same layers: the saved model then holds no compile config,
        # whose members' loss and metrics (training only) no loader could find
        saved = keyed_model(saved.input, saved.output, name=CORE_MODEL)
    layer, calibration, checked = None, None, saved
    if config.training.calibration != "none":
        layer, calibration = fit_calibration(
            config.training.calibration,
            saved,
            fitting.validation,
            task=schema.target.task,
            batch_size=EVALUATION_BATCH_ROWS,
        )
        checked = calibrated_core(saved, layer)
        with strategy.scope():
            core = calibrated_core(core, layer) if fitting.placement.multi_worker else checked
            compile_core(core, schema.target.task, config.training, for_evaluation=True)
    model = compose(fitting.preprocessor, saved, schema, calibration=layer)
    model.save(run.file(runs.MODEL))
    saved_at = time.monotonic()
    splits = {"train": fitting.train, "validation": fitting.validation, "test": fitting.test}
    metrics = evaluate_splits(
        core, splits, strategy=strategy if fitting.placement.multi_worker else None
    )
    check_finite_metrics(metrics, run=run)
    metrics["threshold"] = 0.5 if schema.target.task == "binary" else None
    files.write_json(run.file(runs.METRICS), metrics)
    plotted.result()  # re-raises what the plotting raised
    evaluated_at = time.monotonic()
    composition = _verify_composition(model, checked, data, fitting.validation)
    seconds["save"] = saved_at - started
    seconds["evaluate"] = evaluated_at - saved_at
    seconds["check"] = time.monotonic() - evaluated_at
    return composition, calibration


def _plot_in_background(run: runs.Run, *, kept_epoch: int | None) -> Future[None]:
    """The learning curves, drawn by matplotlib on a thread while TensorFlow evaluates."""
    from mlcli.training.plots import plot_learning_curves

    plotting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcli-plot")
    plotted = plotting.submit(
        plot_learning_curves,
        run.file(runs.HISTORY),
        run.file(runs.LEARNING_CURVES),
        kept_epoch=kept_epoch,
    )
    plotting.shutdown(wait=False)
    return plotted


def _truncate_history(path: Any, epochs: int) -> None:
    """Keeps the history rows of the first `epochs` epochs (a resumed run appends the rest)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    files.write_text(path, "".join(lines[: 1 + epochs]) if epochs else "")


def check_finite_history(
    history: dict[str, list[float]], *, first_epoch: int, run: runs.Run
) -> None:
    """Divergence (exit 6): a NaN or infinite training or validation loss, at its first epoch."""
    losses = {"loss": "training loss", "val_loss": "validation loss"}
    epochs = max((len(history.get(key, [])) for key in losses), default=0)
    for index in range(epochs):
        for key, what in losses.items():
            values = history.get(key, [])
            if index < len(values) and not math.isfinite(float(values[index])):
                raise TrainingDivergedError(
                    f"the {what} became {values[index]} at epoch {first_epoch + index + 1}; "
                    "lower training.learning_rate or check the data. The last good checkpoint "
                    f"is kept in {run.file(runs.CHECKPOINTS)}"
                )


def check_finite_metrics(metrics: dict[str, dict[str, float]], *, run: runs.Run) -> None:
    """Divergence (exit 6): a final metric that is NaN or infinite is never written as success."""
    for split, values in metrics.items():
        for name, value in values.items():
            if not math.isfinite(float(value)):
                raise TrainingDivergedError(
                    f"the final {split} {name} is {value}: the trained model gives NaN or "
                    "infinite outputs; lower training.learning_rate or check the data. The last "
                    f"good checkpoint is kept in {run.file(runs.CHECKPOINTS)}"
                )


def _verify_composition(
    model: keras.Model, core: keras.Model, data: TrainingData, validation: Split
) -> dict[str, Any]:
    """The saved model on raw validation rows against the core on their encoding.

    Never raises: the run is complete by now, and `mlcli.training.train` records the figures
    in manifest.json and exits with SelfCheckError when the check did not pass.
    """
    from mlcli.inference.predictor import Predictor  # it starts TensorFlow: only after `place`
    from mlcli.preprocessing.inputs import model_inputs

    head = data.validation_head()
    if head.num_rows == 0:
        return compare_outputs(np.zeros(0), np.zeros(0), tolerance=COMPOSITION_TOLERANCE)
    try:
        columns = model_inputs(head, data.schema, source="validation")
        raw = Predictor(model, data.schema).eager_outputs(columns)
        direct = keras.ops.convert_to_numpy(core(validation.encoded_head(head), training=False))
    except Exception as error:  # a check that cannot run has failed; the trained run is kept
        return {
            "max_relative_difference": None,
            "max_abs_difference": None,
            "tolerance": COMPOSITION_TOLERANCE,
            "passed": False,
            "error": f"{type(error).__name__}: {error}".splitlines()[0],
        }
    return compare_outputs(raw, direct, tolerance=COMPOSITION_TOLERANCE)


def evaluate_splits(
    core: keras.Model, splits: dict[str, Split | None], *, strategy: Any = None
) -> dict[str, Any]:
    """The compiled metrics of the core on every encoded split.

    With `strategy` (MultiWorkerMirroredStrategy, whose `evaluate` Keras cannot run) the
    multi-worker loop of `mlcli.training.distributed` computes them over all workers.
    """
    results: dict[str, Any] = {}
    for name, split in splits.items():
        if split is None:
            continue
        # large batches: evaluation has no gradients, and fewer steps cost less here
        dataset = split.dataset(batch_size=EVALUATION_BATCH_ROWS)
        if strategy is not None:
            values = distributed.evaluate(core, strategy, dataset)
        else:
            values = core.evaluate(dataset, verbose=0, return_dict=True)
        results[name] = {key: float(value) for key, value in values.items()}
        results[name]["rows"] = split.rows
    return results
