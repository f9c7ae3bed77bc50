"""Several devices and several machines on CPU only: MirroredStrategy over two logical CPU
devices, a two-worker MultiWorkerMirroredStrategy cluster on loopback ports, and the
multi-worker training loop checked against `model.fit` in process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.runs.directory import HISTORY, MANIFEST, METRICS, MODEL
from mlcli.training.callbacks import completed_epochs

runner = CliRunner()
MLCLI = [sys.executable, "-m", "mlcli", "train"]
# The cluster splits each global batch of 2 x 16 rows across its two workers; one process with
# batches of 32 computes the same gradients up to the order of float sums.
CLUSTER_ACCURACY_TOLERANCE = 0.02
CLUSTER_LOSS_TOLERANCE = 1e-3


def _metrics(run: Path) -> dict:
    return json.loads((run / METRICS).read_text())["validation"]


def _history_rows(run: Path) -> list[str]:
    return (run / HISTORY).read_text().strip().splitlines()


def test_mirrored_strategy_over_two_logical_cpus(write_config, tmp_path):
    # the default steps_per_execution (32): Keras's multi-step loop fails under the strategy
    config = write_config(training={"epochs": 2, "batch_size": 16})
    process = subprocess.run(
        [*MLCLI, str(config), "--quiet", "--device", "cpu:2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr
    run = Path(process.stdout.strip().splitlines()[-1])
    device = json.loads((run / MANIFEST).read_text())["device"]
    assert device["strategy"] == "MirroredStrategy"
    assert (device["replicas"], device["batch_size_per_replica"]) == (2, 16)
    assert device["global_batch_size"] == 32
    assert len(_history_rows(run)) == 1 + 2
    assert _metrics(run)["accuracy"] > 0.5


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start_workers(config: Path, folder: Path, *arguments: str) -> list[subprocess.Popen[str]]:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        task = {"type": "worker", "index": index}
        environ = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": task}),
            "MLCLI_DEBUG_WEIGHTS_DIR": str(folder / "weights"),
            "TMPDIR": str(folder / "scratch"),  # where the non-chief writes, to see it removed
        }
        processes.append(
            subprocess.Popen(
                [*MLCLI, str(config), "--quiet", "--device", "cpu", *arguments],
                cwd=folder,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def _finish(processes: list[subprocess.Popen[str]]) -> list[str]:
    """Each worker's last stdout line, once both exited 0."""
    try:
        results = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    errors = "\n".join(
        f"worker {index} exit {process.returncode}: {stderr[-3000:]}"
        for index, (process, (_, stderr)) in enumerate(zip(processes, results, strict=True))
    )
    assert all(process.returncode == 0 for process in processes), errors
    return [stdout.strip().splitlines()[-1] for stdout, _ in results]


@pytest.mark.slow
def test_two_workers_train_one_run_that_matches_a_single_process(write_config, tmp_path):
    (tmp_path / "scratch").mkdir()
    config = write_config(
        training={"epochs": 3, "batch_size": 16, "steps_per_execution": 1, "early_stopping": None}
    )
    chief_output, worker_output = _finish(_start_workers(config, tmp_path))

    runs_folder = tmp_path / "runs" / "tiny"
    run = Path(chief_output)
    assert sorted(p.name for p in runs_folder.iterdir()) == sorted([run.name, "latest"])
    assert Path(worker_output) == runs_folder  # the worker points at the chief's runs
    # its scratch run folder is gone; TensorFlow's autograph also writes its generated modules
    # to TMPDIR and removes them, but not their bytecode where Python writes it
    left = [path.name for path in (tmp_path / "scratch").iterdir() if path.name != "__pycache__"]
    assert not left
    device = json.loads((run / MANIFEST).read_text())["device"]
    assert device["strategy"] == "MultiWorkerMirroredStrategy"
    assert (device["workers"], device["replicas"], device["global_batch_size"]) == (2, 2, 32)
    assert len(_history_rows(run)) == 1 + 3

    chief = np.load(tmp_path / "weights" / "worker-0.npz")
    worker = np.load(tmp_path / "weights" / "worker-1.npz")
    assert chief.files == worker.files
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], worker[name])
    from mlcli.runs.loading import load_model

    saved = load_model(run / MODEL).get_layer("core").get_weights()
    for index, value in enumerate(saved):
        np.testing.assert_array_equal(value, chief[f"w{index}"])

    single = runner.invoke(
        app, ["train", str(config), "--quiet", "--device", "cpu", "--set", "training.batch_size=32"]
    )
    assert single.exit_code == 0, single.output
    alone = _metrics(Path(single.stdout.strip().splitlines()[-1]))
    together = _metrics(run)
    assert abs(together["accuracy"] - alone["accuracy"]) <= CLUSTER_ACCURACY_TOLERANCE
    assert abs(together["loss"] - alone["loss"]) <= CLUSTER_LOSS_TOLERANCE


def _wait_for_epochs(folder: Path, epochs: int, processes: list[subprocess.Popen[str]]) -> Path:
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        for partial in (folder / "runs" / "tiny").glob(".*.partial"):
            if (partial / HISTORY).exists() and len(_history_rows(partial)) > epochs:
                return partial  # the header and `epochs` rows
        time.sleep(0.2)
    raise AssertionError("the cluster did not log the epochs in time")


@pytest.mark.slow
def test_a_stopped_cluster_resumes_where_it_stopped(write_config, tmp_path):
    (tmp_path / "scratch").mkdir()
    config = write_config(
        training={"epochs": 6, "batch_size": 16, "steps_per_execution": 1, "early_stopping": None}
    )
    processes = _start_workers(config, tmp_path)
    partial = _wait_for_epochs(tmp_path, 2, processes)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    try:
        chief_exit = processes[0].wait(timeout=120)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()  # a worker left waiting on the chief's collective
            process.communicate()
    assert chief_exit == 130
    stopped_after = completed_epochs(partial / "checkpoints")
    assert 2 <= stopped_after < 6

    chief_output, _ = _finish(_start_workers(config, tmp_path, "--resume", str(partial)))
    run = Path(chief_output)
    manifest = json.loads((run / MANIFEST).read_text())
    assert (manifest["resumed_after_epoch"], manifest["epochs_run"]) == (stopped_after, 6)
    assert len(_history_rows(run)) == 1 + 6
    chief = np.load(tmp_path / "weights" / "worker-0.npz")
    worker = np.load(tmp_path / "weights" / "worker-1.npz")
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], worker[name])


def _tiny_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


def _tiny_data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    return dataset.batch(16), dataset.take(30).batch(16)


def test_the_loop_matches_model_fit_and_resumes_from_a_checkpoint(tmp_path):
    """`fit` and `evaluate` give what Keras's own give on one machine (no cluster here)."""
    import keras
    import tensorflow as tf

    from mlcli.training import distributed

    train, validation = _tiny_data()
    strategy = tf.distribute.get_strategy()
    expected = _tiny_model(1).fit(train, validation_data=validation, epochs=3, verbose=0)
    trained = _tiny_model(1)
    history = distributed.fit(
        trained, strategy, x=train, validation_data=validation, epochs=3, callbacks=[]
    )
    assert history.history.keys() == expected.history.keys()
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, err_msg=key)
    evaluated = distributed.evaluate(trained, strategy, validation)
    assert evaluated["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    copy = distributed.local_copy(trained)
    assert copy.evaluate(validation, verbose=0, return_dict=True) == pytest.approx(evaluated)

    backup = tmp_path / "backup"
    distributed.fit(
        _tiny_model(1),
        strategy,
        x=train,
        validation_data=validation,
        epochs=2,
        callbacks=[keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False)],
    )
    resumed = distributed.fit(
        _tiny_model(2),  # other initial weights: the checkpoint must replace them
        strategy,
        x=train,
        validation_data=validation,
        epochs=3,
        callbacks=[keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False)],
    )
    assert resumed.epoch == [2]
    np.testing.assert_allclose(resumed.history["loss"], expected.history["loss"][2:], rtol=1e-5)


def test_the_loop_restores_early_stoppings_best_epoch_and_kept_epoch_names_it():
    """The multi-worker loop drives Keras's EarlyStopping as `model.fit` does: the model ends
    with the best epoch's weights, and `kept_epoch` names that epoch."""
    import keras
    import tensorflow as tf

    from mlcli.training import distributed
    from mlcli.training.callbacks import kept_epoch

    train, _ = _tiny_data()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3)).astype("float32")
    flipped = (x[:, 0] + x[:, 1] <= 0).astype("float32")  # validation loss grows as it learns
    validation = tf.data.Dataset.from_tensor_slices((x, flipped)).batch(16)
    model = _tiny_model(1)
    weights: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.append(model.get_weights())
    )
    stopping = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    history = distributed.fit(
        model,
        tf.distribute.get_strategy(),
        x=train,
        validation_data=validation,
        epochs=8,
        callbacks=[stopping, record],
    )
    val_loss = history.history["val_loss"]
    kept = kept_epoch([record, stopping], epochs_run=len(val_loss), epochs=8)
    assert kept["epoch"] == int(np.argmin(val_loss)) + 1 and kept["reason"] == "best_epoch"
    assert kept["epoch"] < len(val_loss) < 8  # it stopped early, and the weights went back
    for final, best in zip(model.get_weights(), weights[kept["epoch"] - 1], strict=True):
        np.testing.assert_array_equal(final, best)


@pytest.mark.parametrize(
    ("task", "ensemble", "label_smoothing"),
    [  # every loss and metric of mlcli.training.members
        ("binary", True, 0.1),
        ("multiclass", True, 0.0),
        ("multiclass", False, 0.1),
        ("regression", True, 0.0),
    ],
)
def test_local_copy_rebuilds_every_loss_and_metric_mlcli_compiles(
    task: str, ensemble: bool, label_smoothing: float
):
    """The chief saves `local_copy(core)`: its compile config must rebuild, members' loss and
    metrics (ensembles, multiclass label smoothing) included; the copy scores as the core."""
    import keras

    from mlcli.training import distributed
    from mlcli.training.compile import loss_and_metrics

    keras.utils.set_random_seed(0)
    outputs = {"binary": 1, "multiclass": 3, "regression": 1}[task]
    inputs = keras.Input((4,))
    activation = "softmax" if task == "multiclass" else "sigmoid"
    core = keras.Model(inputs, keras.layers.Dense(outputs, activation=activation)(inputs))
    loss, metrics = loss_and_metrics(task, label_smoothing=label_smoothing, ensemble=ensemble)
    core.compile(optimizer="adam", loss=loss, metrics=metrics)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32") + (task == "multiclass") * (x[:, 1] > 0)
    expected = core.evaluate(x, y, verbose=0, return_dict=True)
    copy = distributed.local_copy(core)
    assert type(copy.loss) is type(core.loss)
    assert copy.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(expected, rel=1e-5)
