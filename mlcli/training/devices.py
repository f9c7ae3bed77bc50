"""Where training computes: `--device` (or `training.device`), the tf.distribute strategy, and
the precision.

| device    | what trains                            | strategy                             |
| --------- | -------------------------------------- | ------------------------------------ |
| `auto`    | every visible GPU, else the CPU        | one device: default; several: Mirrored |
| `cpu`     | the CPU (GPUs hidden)                  | default                              |
| `cpu:N`   | the CPU split into N logical devices   | MirroredStrategy (tests and CI)      |
| `gpu`     | every visible GPU; exit 2 without one  | one: default; several: Mirrored      |
| `gpu:0,1` | the GPUs of these indices              | one: default; several: Mirrored      |

With `TF_CONFIG` naming several workers (`mlcli.training.cluster`), the strategy is
`MultiWorkerMirroredStrategy` over each worker's devices. `training.batch_size` is the batch of
one replica: the global batch is that times the replicas; the learning rate is left as it is.

Devices can only be chosen before TensorFlow's runtime starts, so `place` runs first in
training and starts the runtime itself.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlcli._tensorflow import import_tensorflow, quiet_runtime
from mlcli.config.training import DEVICE_PATTERN, TrainingConfig
from mlcli.errors import ConfigError
from mlcli.training.cluster import ClusterRole, cluster_role

DEFAULT_STRATEGY = "default"


@dataclass(frozen=True)
class DeviceRequest:
    """A parsed device: `kind`, logical CPU devices, and GPU indices (None: every GPU)."""

    spec: str
    kind: str
    cpu_devices: int = 1
    gpu_indices: tuple[int, ...] | None = None


def parse_device(spec: str) -> DeviceRequest:
    """`auto`, `cpu`, `cpu:N`, `gpu` or `gpu:0,1` as a `DeviceRequest`."""
    if not re.fullmatch(DEVICE_PATTERN, spec):
        raise ConfigError(
            f"--device / training.device: expected auto, cpu, cpu:N, gpu or gpu:0,1, found {spec!r}"
        )
    kind, _, detail = spec.partition(":")
    if kind == "cpu":
        return DeviceRequest(spec, kind, cpu_devices=int(detail or 1))
    if kind == "gpu" and detail:
        return DeviceRequest(spec, kind, gpu_indices=tuple(int(i) for i in detail.split(",")))
    return DeviceRequest(spec, kind)


@dataclass
class Placement:
    """The chosen devices and the strategy that trains on them."""

    strategy: Any
    request: DeviceRequest
    gpus: list[str]
    cluster: ClusterRole | None

    @property
    def replicas(self) -> int:
        """Model replicas kept in sync: devices times workers."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def multi_worker(self) -> bool:
        """Several machines: Keras's `fit` does not run; `mlcli.training.distributed` trains."""
        return self.cluster is not None

    @property
    def strategy_name(self) -> str:
        """The strategy's public name, or `default` (no tf.distribute strategy)."""
        if self.cluster is not None:
            return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
        name = type(self.strategy).__name__
        return DEFAULT_STRATEGY if name.startswith("_Default") else name

    def describe(self, training: TrainingConfig) -> dict[str, Any]:
        """What manifest.json records under `device`."""
        return {
            "requested": self.request.spec,
            "type": "gpu" if self.gpus else "cpu",
            "gpus": self.gpus,
            "strategy": self.strategy_name,
            "replicas": self.replicas,
            "workers": self.cluster.workers if self.cluster else 1,
            "task": self.cluster.task if self.cluster else None,
            "chief": self.cluster.is_chief if self.cluster else True,
            "batch_size_per_replica": training.batch_size,
            "global_batch_size": training.batch_size * self.replicas,
            "precision": training.precision,
        }

    def summary(self, training: TrainingConfig) -> str:
        """One line for the log."""
        where = ", ".join(self.gpus) if self.gpus else "CPU"
        if self.cluster:
            where += f", worker {self.cluster.task} of {self.cluster.workers}"
        return (
            f"{where}; strategy {self.strategy_name}, {self.replicas} replica(s), global batch "
            f"{training.batch_size * self.replicas} ({training.batch_size} per replica), "
            f"{training.precision}"
        )


def _chosen_gpus(request: DeviceRequest, gpus: list[Any]) -> list[Any]:
    if request.kind == "cpu":
        return []
    if request.kind == "auto":
        return list(gpus)
    if not gpus:
        raise ConfigError(
            f"--device {request.spec}: TensorFlow sees no GPU (found the CPU only); "
            "use --device cpu or auto, or on a GPU machine install the CUDA build: "
            'pip install "tensorflow[and-cuda]"'
        )
    if request.gpu_indices is None:
        return list(gpus)
    missing = [index for index in request.gpu_indices if index >= len(gpus)]
    if missing:
        raise ConfigError(
            f"--device {request.spec}: no GPU {', '.join(map(str, missing))}; TensorFlow sees "
            f"{len(gpus)}: {', '.join(gpu.name for gpu in gpus)} (indices 0-{len(gpus) - 1})"
        )
    return [gpus[index] for index in dict.fromkeys(request.gpu_indices)]


def _gpu_name(tf: Any, gpu: Any) -> str:
    details = tf.config.experimental.get_device_details(gpu)
    return f"{details.get('device_name', 'GPU')} ({gpu.name.removeprefix('/physical_device:')})"


def _configure(tf: Any, request: DeviceRequest, gpus: list[Any], chosen: list[Any]) -> None:
    if gpus and chosen != gpus:
        tf.config.set_visible_devices(chosen, "GPU")
    if request.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration() for _ in range(request.cpu_devices)]
        tf.config.set_logical_device_configuration(cpu, logical)


@contextlib.contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Gives SIGTERM back to Python after TensorFlow's coordination service took it over.

    Its preemption notifier swallows SIGTERM; mlcli's own handler stops training at once with
    the last epoch's checkpoint kept (exit 130), as on one machine.
    """
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


_multi_worker_strategies: list[Any] = []  # one per process: it configures the runtime


def _strategy(tf: Any, request: DeviceRequest, chosen: list[Any], cluster: Any) -> Any:
    if cluster is not None:
        if not _multi_worker_strategies:
            with _sigterm_kept():
                _multi_worker_strategies.append(tf.distribute.MultiWorkerMirroredStrategy())
        return _multi_worker_strategies[0]
    if request.cpu_devices > 1:
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(request.cpu_devices)])
    if len(chosen) > 1:
        return tf.distribute.MirroredStrategy()  # every visible GPU: the chosen ones
    return tf.distribute.get_strategy()


def place(spec: str, *, verbose: bool = False) -> Placement:
    """Applies a device choice and `TF_CONFIG`, starts TensorFlow, returns the strategy."""
    request = parse_device(spec)
    cluster = cluster_role()
    if cluster is not None and request.cpu_devices > 1:
        raise ConfigError(
            f"--device {spec}: cpu:N splits one machine's CPU; with TF_CONFIG naming "
            f"{cluster.workers} workers use auto, cpu or gpu"
        )
    tf = import_tensorflow(verbose=verbose, start=False)
    gpus = tf.config.list_physical_devices("GPU")
    chosen = _chosen_gpus(request, gpus)
    with quiet_runtime(verbose=verbose):
        try:
            _configure(tf, request, gpus, chosen)
            strategy = _strategy(tf, request, chosen, cluster)
        except RuntimeError as error:
            raise ConfigError(
                f"--device {spec}: TensorFlow had already started in this process ({error}); "
                "devices and TF_CONFIG take effect in a fresh process (`mlcli train`)"
            ) from error
        tf.constant(0)
    return Placement(strategy, request, [_gpu_name(tf, gpu) for gpu in chosen], cluster)


@contextlib.contextmanager
def precision(policy: str) -> Iterator[None]:
    """Layers built inside compute under a Keras dtype policy (`mixed_float16`, ...).

    The previous global policy comes back afterwards, so that the preprocessing layers and
    anything built later stay float32.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
