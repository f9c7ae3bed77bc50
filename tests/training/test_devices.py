"""Devices, precision and cluster roles, in process: `--device` values, `TF_CONFIG` parsing,
a missing GPU, mixed precision, and the multi-worker training loop under the default strategy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.errors import ConfigError
from mlcli.runs.directory import MANIFEST
from mlcli.training.cluster import cluster_role
from mlcli.training.devices import parse_device

runner = CliRunner()


@pytest.mark.parametrize(
    ("spec", "kind", "cpu_devices", "gpu_indices"),
    [
        ("auto", "auto", 1, None),
        ("cpu", "cpu", 1, None),
        ("cpu:2", "cpu", 2, None),
        ("gpu", "gpu", 1, None),
        ("gpu:1", "gpu", 1, (1,)),
        ("gpu:0,1", "gpu", 1, (0, 1)),
    ],
)
def test_device_values_parse(spec, kind, cpu_devices, gpu_indices):
    request = parse_device(spec)
    assert (request.kind, request.cpu_devices, request.gpu_indices) == (
        kind,
        cpu_devices,
        gpu_indices,
    )


@pytest.mark.parametrize("spec", ["tpu", "gpu:", "gpu:a", "cpu:0", "GPU", "gpu:0;1", ""])
def test_bad_device_values_are_config_errors(spec):
    with pytest.raises(ConfigError, match="expected auto, cpu, cpu:N, gpu or gpu:0,1"):
        parse_device(spec)


def test_bad_device_flag_is_exit_2_before_tensorflow(write_config):
    result = runner.invoke(app, ["train", str(write_config()), "--device", "tpu:0"])
    assert result.exit_code == 2
    assert "tpu:0" in result.stderr


@pytest.mark.parametrize(
    ("key", "value"), [("training.device", "gpu:x"), ("training.precision", "float16")]
)
def test_bad_device_and_precision_in_the_config(write_config, key, value):
    result = runner.invoke(app, ["validate", str(write_config()), "--set", f"{key}={value}"])
    assert result.exit_code == 2
    assert key in result.stderr


def _tf_config(cluster: dict, task_type: str, index: int) -> dict[str, str]:
    task = {"type": task_type, "index": index}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}


WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}


def test_no_cluster_without_tf_config_or_with_one_worker():
    assert cluster_role({}) is None
    assert cluster_role(_tf_config({"worker": ["127.0.0.1:1"]}, "worker", 0)) is None


@pytest.mark.parametrize(
    ("cluster", "task_type", "index", "chief"),
    [
        (WORKERS, "worker", 0, True),
        (WORKERS, "worker", 2, False),
        ({"chief": ["127.0.0.1:9"], **WORKERS}, "chief", 0, True),
        ({"chief": ["127.0.0.1:9"], **WORKERS}, "worker", 0, False),
    ],
)
def test_the_chief_is_the_chief_task_or_worker_zero(cluster, task_type, index, chief):
    role = cluster_role(_tf_config(cluster, task_type, index))
    assert role is not None
    assert role.is_chief is chief
    assert role.workers == len(cluster.get("chief", [])) + len(cluster["worker"])
    assert role.task == f"{task_type}:{index}"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TF_CONFIG": "{not json"}, "not valid JSON"),
        ({"TF_CONFIG": '{"task": {}}'}, "no `cluster` mapping"),
        (_tf_config({"ps": ["h:1"], **WORKERS}, "worker", 0), "no parameter servers"),
        (_tf_config(WORKERS, "worker", 3), "task.index is 3, expected 0 to 2"),
        (_tf_config(WORKERS, "evaluator", 0), "task.type is 'evaluator'"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": "h:1"}})}, "cluster.worker must be"),
    ],
)
def test_bad_tf_config_names_what_is_wrong(environ, message):
    with pytest.raises(ConfigError, match=message) as caught:
        cluster_role(environ)
    assert str(caught.value).startswith("TF_CONFIG: ")


def _gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def test_asking_for_an_absent_gpu_is_exit_2_naming_what_was_found(write_config):
    if _gpus():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["train", str(write_config()), "--quiet", "--device", "gpu:0"])
    assert result.exit_code == 2, result.output
    assert "--device gpu:0: TensorFlow sees no GPU (found the CPU only)" in result.stderr
    assert not list((Path(write_config()).parent / "runs" / "tiny").glob(".*.partial"))


def test_logical_devices_once_tensorflow_runs_are_exit_2(write_config):
    import tensorflow as tf

    tf.constant(0)  # this test process has started TensorFlow's runtime
    result = runner.invoke(app, ["train", str(write_config()), "--quiet", "--device", "cpu:3"])
    assert result.exit_code == 2, result.output
    assert "TensorFlow had already started in this process" in result.stderr


def test_mixed_precision_keeps_the_output_float32(write_config):
    import keras

    from mlcli.runs.loading import load_model

    config = write_config(
        training={"epochs": 1, "batch_size": 32, "precision": "mixed_float16", "device": "cpu"}
    )
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    device = json.loads((run / MANIFEST).read_text())["device"]
    assert device["precision"] == "mixed_float16"
    assert device["requested"] == "cpu"
    assert (device["strategy"], device["replicas"]) == ("default", 1)
    assert device["global_batch_size"] == 32
    model = load_model(run / "model.keras")
    core = model.get_layer("core")
    policies = {layer.name: layer.dtype_policy.name for layer in core.layers if layer.weights}
    assert policies.pop("probability") == "float32"
    assert set(policies.values()) == {"mixed_float16"}, policies
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after training
    outputs = core.outputs[0]
    assert outputs.dtype == "float32"
