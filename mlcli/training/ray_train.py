"""`mlcli train --ray [ADDRESS] --workers N`: mlcli's multi-worker training on Ray-placed workers.

The driver (this process) places N `TrainingWorker` actors with a placement group (PACK by
default, SPREAD on request), each holding `--cpus-per-worker` CPUs and `--gpus-per-worker` GPUs.
Each actor reports its node and a free port; the driver builds every worker's `TF_CONFIG` from
them (worker 0 is the chief) and each actor runs `python -m mlcli train ...` as a child with
it: the same config, `--set`, `--output` and `--resume` as given here. The chief writes the one
run directory (best on storage every worker reaches; else it is copied back from the chief's
node once complete); its progress events are replayed into this process's reporter, and its
run directory is returned.

Not Ray Train's `TensorflowTrainer`: it sets `TF_USE_LEGACY_KERAS=1` and trains through
`tf.keras`, while mlcli trains Keras 3 models under `MultiWorkerMirroredStrategy` with its own
loop (`mlcli.training.distributed`); it needs only processes and a `TF_CONFIG`.

Failure (`mlcli.training.ray_job`): a worker whose child exits non-zero, whose actor dies or
whose node is lost fails the job; the others are stopped, never left waiting, and the job ends
with exit 130 and the chief's partial run, which `--resume RUN --ray --workers N` continues.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from mlcli._ray import connect, require_ray
from mlcli.errors import ConfigError
from mlcli.reporting import QuietReporter, Reporter
from mlcli.training.devices import parse_device
from mlcli.training.ray_cluster import (
    WorkerRequest,
    worker_address,
    worker_command,
)
from mlcli.training.ray_job import Job, Worker, first_line, run_job
from mlcli.training.ray_worker import TrainingWorker

COMMAND = "mlcli train"
ACTOR_PREFIX = "mlcli-train-worker"  # the actors' names: mlcli-train-worker-<index>-<job>
PLACE_SECONDS = 60.0  # how long Ray may take to place the workers before the job gives up


def _runs_folder(config: Path, overrides: Sequence[str], output_dir: Path | None) -> Path:
    """Where the chief writes the run, absolute; the config is checked here (exit 2) first."""
    from mlcli.config.loading import load_config

    loaded = load_config(config, overrides=list(overrides))
    return Path(output_dir or loaded.output.dir).resolve()


@contextlib.contextmanager
def _placed(request: WorkerRequest) -> Iterator[list[Worker]]:
    """The workers' actors in a placement group, killed (and the group removed) at the end."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group(request.bundles(), strategy=request.placement.upper())
    workers: list[Worker] = []
    try:
        ready, _ = ray.wait([group.ready()], timeout=PLACE_SECONDS)
        if not ready:
            raise ConfigError(
                f"Ray could not place {request.workers} worker(s) of "
                f"{request.cpus_per_worker:g} CPU(s) and {request.gpus_per_worker:g} GPU(s) "
                f"({request.placement}) within {PLACE_SECONDS:g} s: the cluster has them, "
                "but they are taken (`ray status` shows by what); retry when they are free"
            )
        job = uuid.uuid4().hex[:8]
        actor_class = ray.remote(TrainingWorker)
        for index in range(request.workers):
            actor = actor_class.options(
                name=f"{ACTOR_PREFIX}-{index}-{job}",
                num_cpus=request.cpus_per_worker,
                num_gpus=request.gpus_per_worker,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=index
                ),
            ).remote()
            workers.append(Worker(index, actor))
        yield workers
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                ray.kill(worker.actor, no_restart=True)
        with contextlib.suppress(Exception):
            remove_placement_group(group)


def _locate(workers: list[Worker]) -> None:
    """Each worker's node and a free port there: its `TF_CONFIG` address."""
    import ray

    hosts = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
    for attempt in range(3):
        try:
            answers = ray.get([worker.actor.where.remote() for worker in workers], timeout=120)
        except ray.exceptions.RayError as error:
            raise ConfigError(
                f"Ray could not start the training workers ({first_line(error)}); every node "
                "needs the same mlcli install, with the ray and train extras (docs/ray.md)"
            ) from error
        for worker, (node, port) in zip(workers, answers, strict=True):
            worker.host = hosts.get(node, node)
            worker.address = worker_address(worker.host, port)
        if len({worker.address for worker in workers}) == len(workers) or attempt == 2:
            return  # (two free ports on one node are almost never the same)


def _largest_node_cpus() -> float:
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    return max((float(node.get("Resources", {}).get("CPU", 0.0)) for node in alive), default=0.0)


def train_on_ray(
    config: Path | None,
    *,
    address: str,
    request: WorkerRequest,
    overrides: Sequence[str] = (),
    output_dir: Path | None = None,
    resume: Path | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    verbose: bool = False,
) -> Path:
    """Trains `config` with `request.workers` Ray-placed workers; returns the run directory.

    Args:
        config: the YAML config's path (`config.yaml` when left out; with `resume`, optional).
            Every worker reads it, and the data it names, at the same path.
        address: the Ray cluster (`mlcli._ray.connect`): local, auto, HOST:PORT or ray://...
        request: the workers, the CPUs and GPUs of each, and their placement.
        overrides, output_dir, resume, device, verbose: as `mlcli.training.train.train`'s.
            The runs folder (`output_dir`, else the config's `output.dir`) is best shared by
            every worker and this process; a complete run this process does not see is
            copied back from the chief's node. `resume` needs shared storage.
        reporter: receives the chief's progress events.

    Raises:
        ConfigError: a bad request, no Ray (install mlcli[ray]), an unreachable address, or a
            cluster too small for the workers (exit 2).
        InterruptedRunError: a worker died or was stopped; the chief's partial run is kept
            for `--resume` (exit 130).
        MlcliError: the error of a worker that failed on its own (its config, data, run, a
            divergence: exit 2, 3, 4 or 6), naming the worker and its node.
    """
    reporter = reporter or QuietReporter()
    request.check()
    if device is not None and request.workers > 1 and parse_device(device).cpu_devices > 1:
        raise ConfigError(
            f"--device {device}: cpu:N splits one machine's CPU; with --workers "
            f"{request.workers} use auto, cpu or gpu"
        )
    require_ray(COMMAND)
    if resume is None:
        config = Path(config or "config.yaml")
        output_dir = _runs_folder(config, overrides, output_dir)
    command = worker_command(
        config,
        overrides=overrides,
        output_dir=output_dir if resume is None else None,
        resume=resume,
        device=device,
        verbose=verbose,
    )
    with connect(address, command=COMMAND) as cluster:
        request.check_capacity(cluster.cpus, cluster.gpus, _largest_node_cpus())
        with _placed(request) as workers:
            _locate(workers)
            job = Job(workers, reporter, verbose)
            reporter.event(
                "ray",
                f"{len(workers)} worker(s) on {len({w.host for w in workers})} node(s): "
                + ", ".join(f"{w.index} at {w.address}" for w in workers),
            )
            return run_job(job, command, address=address, request=request)
