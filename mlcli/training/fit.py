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
from mlcli.errors import RunError, TrainingDivergedError
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs

tf = import_tensorflow(
    start=False
)  # devices are chosen first: mlcli.training.devices.place starts it
import keras  # noqa: E402

from mlcli.models.core import build_core, compose  # noqa: E402
from mlcli.preprocessing.layers import build_preprocessor  # noqa: E402
from mlcli.training import distributed  # noqa: E402
from mlcli.training.callbacks import EpochSeeding, completed_epochs, run_callbacks  # noqa: E402
from mlcli.training.compile import compile_core, epoch_auc  # noqa: E402
from mlcli.training.data import TrainingData  # noqa: E402
from mlcli.training.devices import Placement, place, precision  # noqa: E402

if TYPE_CHECKING:
    from mlcli.training.datasets import Split

# Rows per batch of validation and the final evaluation: 16384 took 0.5-0.8 s for 900k rows
# here, 4096 0.8-0.9 s
EVALUATION_BATCH_ROWS = 16384

# The composed model must reproduce the core's outputs on the encoded data.
COMPOSITION_TOLERANCE = 1e-5


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
    history = _fit(config, data, run, fitting, reporter=reporter)
    fitted_at = time.monotonic()
    difference = _save_and_evaluate(config, data, run, fitting)
    return {
        "device": fitting.placement.describe(config.training),
        "epochs_run": first_epoch + len(history.get("loss", [])),
        "resumed_after_epoch": first_epoch or None,
        "composition_max_abs_difference": difference,
        "seconds": {
            "prepare": encoded_at - started,  # devices, and the layers' encoding if needed
            "fit": fitted_at - encoded_at,
            "save_and_evaluate": time.monotonic() - fitted_at,
        },
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
    with placement.strategy.scope(), precision(config.training.precision):
        core = build_core(data.schema, config.model, encoded_shapes=train.shapes)
        compile_core(core, task, config.training, steps_per_epoch=steps)
    return _Fitting(placement, preprocessor, train, validation, test, core, batch_size, steps)


def _fit(
    config: Config, data: TrainingData, run: runs.Run, fitting: _Fitting, *, reporter: Reporter
) -> dict[str, list[float]]:
    """`model.fit` (or the multi-worker loop) from the checkpoint's epoch; the history."""
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
        history, fitting.core = distributed.fit(
            fitting.core, fitting.placement.strategy, **arguments
        )
    else:
        history = fitting.core.fit(**arguments, verbose=0)
    _check_finite(history.history, run)
    return history.history


def _save_and_evaluate(
    config: Config, data: TrainingData, run: runs.Run, fitting: _Fitting
) -> float:
    """Saves model.keras and metrics.json, draws the learning curves; the composition check."""
    plotted = _plot_in_background(run)
    core, schema = fitting.core, data.schema
    if schema.target.task == "binary" and not epoch_auc(config.training):
        with fitting.placement.strategy.scope():  # the final metrics include AUC
            compile_core(core, schema.target.task, config.training, for_evaluation=True)
    model = compose(fitting.preprocessor, core, schema)
    difference = _verify_composition(model, core, data, fitting.validation)
    model.save(run.file(runs.MODEL))
    splits = {"train": fitting.train, "validation": fitting.validation, "test": fitting.test}
    metrics = evaluate_splits(core, splits)
    metrics["threshold"] = 0.5 if schema.target.task == "binary" else None
    files.write_json(run.file(runs.METRICS), metrics)
    plotted.result()  # re-raises what the plotting raised
    return difference


def _plot_in_background(run: runs.Run) -> Future[None]:
    """The learning curves, drawn by matplotlib on a thread while TensorFlow evaluates."""
    from mlcli.training.plots import plot_learning_curves

    plotting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcli-plot")
    plotted = plotting.submit(
        plot_learning_curves, run.file(runs.HISTORY), run.file(runs.LEARNING_CURVES)
    )
    plotting.shutdown(wait=False)
    return plotted


def _truncate_history(path: Any, epochs: int) -> None:
    """Keeps the history rows of the first `epochs` epochs (a resumed run appends the rest)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    files.write_text(path, "".join(lines[: 1 + epochs]) if epochs else "")


def _check_finite(history: dict[str, list[float]], run: runs.Run) -> None:
    losses = history.get("loss", [])
    if any(not math.isfinite(value) for value in losses):
        raise TrainingDivergedError(
            f"the training loss became {losses[-1]} at epoch {len(losses)}; lower "
            f"training.learning_rate or check the data. The last good checkpoint is kept "
            f"in {run.file(runs.CHECKPOINTS)}"
        )


def _verify_composition(
    model: keras.Model, core: keras.Model, data: TrainingData, validation: Split
) -> float:
    """The largest difference between the saved model on raw rows and the core on their encoding."""
    from mlcli.inference.predictor import Predictor  # it starts TensorFlow: only after `place`
    from mlcli.preprocessing.inputs import model_inputs

    head = data.validation_head()
    if head.num_rows == 0:
        return 0.0
    columns = model_inputs(head, data.schema, source="validation")
    raw = Predictor(model, data.schema).eager_outputs(columns)
    direct = keras.ops.convert_to_numpy(core(validation.encoded_head(head), training=False))
    difference = float(np.max(np.abs(raw - direct))) if len(raw) else 0.0
    if difference > COMPOSITION_TOLERANCE:
        raise RunError(
            f"internal check failed: the saved model differs from the trained core by "
            f"{difference:.2e} (> {COMPOSITION_TOLERANCE}); please report this bug"
        )
    return difference


def evaluate_splits(core: keras.Model, splits: dict[str, Split | None]) -> dict[str, Any]:
    """The compiled metrics of the core on every encoded split."""
    results: dict[str, Any] = {}
    for name, split in splits.items():
        if split is None:
            continue
        # large batches: evaluation has no gradients, and fewer steps cost less here
        dataset = split.dataset(batch_size=EVALUATION_BATCH_ROWS)
        values = core.evaluate(dataset, verbose=0, return_dict=True)
        results[name] = {key: float(value) for key, value in values.items()}
        results[name]["rows"] = split.rows
    return results
