"""Fitting with TensorFlow: encode once, `model.fit` on `tf.data`, save the composed model.

Imported only by commands that train, after TensorFlow has been imported quietly.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcli import files
from mlcli._tensorflow import import_tensorflow
from mlcli.config.schema import Config
from mlcli.data.splits import Splits
from mlcli.errors import RunError, TrainingDivergedError
from mlcli.features.schema import FeatureSchema
from mlcli.preprocessing.inputs import model_inputs
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs
from mlcli.tracking.tensorboard import tensorboard_callbacks

tf = import_tensorflow(
    start=False
)  # devices are chosen first: mlcli.training.devices.place starts it
import keras  # noqa: E402

from mlcli.models.core import (  # noqa: E402
    build_core,
    compile_core,
    compose,
    epoch_auc,
    predict_raw,
    schedule_callbacks,
)
from mlcli.preprocessing.layers import build_preprocessor  # noqa: E402
from mlcli.training import distributed  # noqa: E402
from mlcli.training.callbacks import ReporterCallback, RunCheckpoint, completed_epochs  # noqa: E402
from mlcli.training.datasets import EncodedSplit, encode_split  # noqa: E402
from mlcli.training.devices import place, precision  # noqa: E402

if TYPE_CHECKING:
    from mlcli.data.streamed_splits import StreamedSplits
    from mlcli.training.streaming import StreamedSplit


# Splits encoded with Arrow before TensorFlow loaded: name -> (features, labels)
EarlyEncoding = dict[str, tuple[dict[str, np.ndarray], np.ndarray] | None]

# Rows per batch of validation and the final evaluation: 16384 took 0.5-0.8 s for 900k rows
# here, 4096 0.8-0.9 s
EVALUATION_BATCH_ROWS = 16384

# The composed model must reproduce the core's outputs on the encoded data.
COMPOSITION_TOLERANCE = 1e-5


def _dataset(split: EncodedSplit | StreamedSplit, *, batch_size: int) -> Any:
    return split.dataset(batch_size=batch_size)


def encoded_splits(
    preprocessor: keras.Model,
    splits: Splits | StreamedSplits,
    schema: FeatureSchema,
    encoded: EarlyEncoding | None = None,
) -> tuple[Any, Any, Any]:
    """(train, validation, test): encoded once in memory, or while read for a streamed table.

    `encoded` holds the splits as `mlcli.preprocessing.arrow` encoded them with Arrow already.
    """
    if not isinstance(splits, Splits):
        from mlcli.training.streaming import streamed_splits

        return streamed_splits(preprocessor, splits, schema)
    if encoded is not None:
        parts = [encoded.get(name) for name in ("train", "validation", "test")]
        train, validation, test = (None if p is None else EncodedSplit(*p) for p in parts)
        return train, validation, test
    train = encode_split(preprocessor, splits.train, schema, source="training split")
    validation = encode_split(preprocessor, splits.validation, schema, source="validation split")
    test = None
    if splits.test is not None:
        test = encode_split(preprocessor, splits.test, schema, source="test split")
    return train, validation, test


class EpochSeeding(keras.callbacks.Callback):
    """The training data shuffled, and dropout's random streams seeded, by (seed, epoch).

    Tying randomness to the epoch number, not to how far the process got, makes a resumed
    run see exactly the batches and dropout masks that an uninterrupted run would have seen.
    """

    def __init__(self, split: EncodedSplit | StreamedSplit, *, batch_size: int, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        steps = math.ceil(split.rows / batch_size)
        one_epoch = split.epoch_batches(batch_size=batch_size, seed=seed)
        self.dataset = (
            tf.data.Dataset.from_tensors(0)
            .flat_map(
                tf.autograph.experimental.do_not_convert(
                    lambda _: one_epoch(self.epoch.read_value())
                )
            )
            .apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(tf.data.AUTOTUNE)
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch.assign(epoch)
        base = (self.seed * 7919 + epoch * 104729) % (2**31 - 1)
        count = 0
        for layer in self.model._flatten_layers():
            # Keras keeps dropout's state in SeedGenerators that save_weights does not store
            for generator in getattr(layer, "_seed_generators", []):
                count += 1
                state = np.array([base + count, 0])
                generator.state.assign(state.astype(generator.state.dtype))


def _class_weight(schema: FeatureSchema, split: Any, mode: str) -> dict[int, float] | None:
    if mode != "balanced" or schema.target.task == "regression":
        return None
    counts = split.label_counts(len(schema.target.classes))
    return {
        index: float(split.rows / (len(counts) * count)) if count else 0.0
        for index, count in enumerate(counts)
    }


def _callbacks(config: Config, run: runs.Run, reporter: Reporter, steps: int) -> list[Any]:
    settings = config.training.early_stopping
    stopping = None
    if settings is not None:
        stopping = keras.callbacks.EarlyStopping(
            monitor=settings.monitor,
            patience=settings.patience,
            min_delta=settings.min_delta,
            restore_best_weights=settings.restore_best_weights,
        )
    early = [stopping] if stopping is not None else []
    schedules = schedule_callbacks(config.training)
    # Order matters: stateful callbacks update before the checkpoint saves them.
    return [
        keras.callbacks.TerminateOnNaN(),
        *early,
        *schedules,
        RunCheckpoint(run.file(runs.CHECKPOINTS), stateful=[*early, *schedules]),
        keras.callbacks.CSVLogger(str(run.file(runs.HISTORY)), append=True),
        ReporterCallback(reporter, epochs=config.training.epochs, steps_per_epoch=steps),
        *tensorboard_callbacks(config, run),
    ]


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
    model: keras.Model, core: keras.Model, splits: Any, schema: FeatureSchema, encoded: Any
) -> float:
    if isinstance(encoded, EncodedSplit):
        sample = splits.validation.slice(0, 256)
        features = {k: v[:256] for k, v in encoded.features.items()}
    else:
        sample, features = encoded.sample(256)
    if sample.num_rows == 0:
        return 0.0
    raw = predict_raw(model, model_inputs(sample, schema, source="validation"), schema)
    direct = keras.ops.convert_to_numpy(core(features, training=False))
    difference = float(np.max(np.abs(raw - direct))) if len(raw) else 0.0
    if difference > COMPOSITION_TOLERANCE:
        raise RunError(
            f"internal check failed: the saved model differs from the trained core by "
            f"{difference:.2e} (> {COMPOSITION_TOLERANCE}); please report this bug"
        )
    return difference


def fit_run(
    config: Config,
    splits: Splits | StreamedSplits,
    schema: FeatureSchema,
    run: runs.Run,
    *,
    reporter: Reporter,
    device: str | None,
    verbose: bool,
    resuming: bool,
    encoded: EarlyEncoding | None = None,
) -> dict[str, Any]:
    """Fits, saves model.keras, history, metrics and plots into the run; returns manifest fields.

    `encoded`: the splits already encoded with Arrow (`mlcli.preprocessing.arrow`), if they were.
    """
    del resuming  # RunCheckpoint finds the checkpoints
    started = time.monotonic()
    placement = place(device or config.training.device, verbose=verbose)
    keras.utils.set_random_seed(config.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    preprocessor = build_preprocessor(schema)
    train, validation, test = encoded_splits(preprocessor, splits, schema, encoded)
    encoded_at = time.monotonic()
    if encoded is None:
        reporter.event("encoded", f"{train.rows} training rows in {encoded_at - started:.1f}s")

    shapes = train.shapes
    batch_size = config.training.batch_size * placement.replicas  # the global batch
    steps = math.ceil(train.rows / batch_size)
    with placement.strategy.scope(), precision(config.training.precision):
        core = build_core(schema, config.model, encoded_shapes=shapes)
        compile_core(core, schema.target.task, config.training, steps_per_epoch=steps)
    reporter.event("device", placement.summary(config.training))
    first_epoch = completed_epochs(run.file(runs.CHECKPOINTS))
    _truncate_history(run.file(runs.HISTORY), first_epoch)
    if first_epoch:
        reporter.event("resume", f"continuing after epoch {first_epoch} of {run.path}")
    shuffle = EpochSeeding(train, batch_size=batch_size, seed=config.seed)
    arguments: dict[str, Any] = dict(
        x=shuffle.dataset,
        validation_data=_dataset(validation, batch_size=max(batch_size, EVALUATION_BATCH_ROWS)),
        epochs=config.training.epochs,
        class_weight=_class_weight(schema, train, config.training.class_weight),
        callbacks=[shuffle, *_callbacks(config, run, reporter, steps)],
    )
    if placement.multi_worker:  # Keras's fit does not run under MultiWorkerMirroredStrategy
        history, core = distributed.fit(core, placement.strategy, **arguments)
    else:
        history = core.fit(**arguments, verbose=0)
    _check_finite(history.history, run)
    fitted_at = time.monotonic()
    from mlcli.training.plots import plot_learning_curves

    # matplotlib draws on a thread (Python) while the evaluation below runs in TensorFlow
    plotting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlcli-plot")
    plotted = plotting.submit(
        plot_learning_curves, run.file(runs.HISTORY), run.file(runs.LEARNING_CURVES)
    )
    plotting.shutdown(wait=False)

    if schema.target.task == "binary" and not epoch_auc(config.training):
        with placement.strategy.scope():  # the final metrics include AUC
            compile_core(core, schema.target.task, config.training, for_evaluation=True)
    model = compose(preprocessor, core, schema)
    difference = _verify_composition(model, core, splits, schema, validation)
    model.save(run.file(runs.MODEL))
    metrics = evaluate_splits(core, {"train": train, "validation": validation, "test": test})
    metrics["threshold"] = 0.5 if schema.target.task == "binary" else None
    files.write_json(run.file(runs.METRICS), metrics)
    plotted.result()  # re-raises what the plotting raised
    return {
        "device": placement.describe(config.training),
        "epochs_run": first_epoch + len(history.history.get("loss", [])),
        "resumed_after_epoch": first_epoch or None,
        "composition_max_abs_difference": difference,
        "seconds": {
            "prepare": encoded_at - started,  # devices, and the layers' encoding if needed
            "fit": fitted_at - encoded_at,
            "save_and_evaluate": time.monotonic() - fitted_at,
        },
    }


def evaluate_splits(core: keras.Model, splits: dict[str, Any]) -> dict[str, Any]:
    """The compiled metrics of the core on every encoded split."""
    results: dict[str, Any] = {}
    for name, split in splits.items():
        if split is None:
            continue
        # large batches: evaluation has no gradients, and fewer steps cost less here
        dataset = _dataset(split, batch_size=EVALUATION_BATCH_ROWS)
        values = core.evaluate(dataset, verbose=0, return_dict=True)
        results[name] = {key: float(value) for key, value in values.items()}
        results[name]["rows"] = split.rows
    return results
