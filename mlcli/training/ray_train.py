"""`mlcli train --ray [ADDRESS] --workers N`: mlcli's multi-worker training on Ray-placed workers.

The driver (this process) places N `TrainingWorker` actors with a placement group (PACK by
default, SPREAD on request), each holding `--cpus-per-worker` CPUs and `--gpus-per-worker` GPUs.
Each actor reports its node and a free port; the driver builds every worker's `TF_CONFIG` from
them (worker 0 is the chief) and each actor runs `python -m mlcli train ...` as a child with
it: the same config, `--set`, `--output` and `--resume` as given here. The chief writes the one
run directory (`--output` must be storage every worker reaches); its progress events are
replayed into this process's reporter, and its run directory is returned.

Not Ray Train's `TensorflowTrainer`: it sets `TF_USE_LEGACY_KERAS=1` and trains through
`tf.keras`, while mlcli trains Keras 3 models under `MultiWorkerMirroredStrategy` with its own
loop (`mlcli.training.distributed`); it needs only processes and a `TF_CONFIG`.

Failure: the driver polls every worker with a timeout. A worker whose child exits non-zero,
whose actor dies or whose node is lost fails the job: the others get a few seconds to end by
themselves, are then stopped (SIGTERM, then SIGKILL), the actors are killed, and the job ends
with exit 130 and the chief's partial run, which `--resume RUN --ray --workers N` continues
(or with the failed worker's own code when it failed on its own: config, data, divergence).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcli._ray import connect, require_ray
from mlcli.errors import ConfigError, InterruptedRunError, MlcliError
from mlcli.reporting import QuietReporter, Reporter
from mlcli.training.devices import parse_device
from mlcli.training.ray_cluster import (
    OWN_FAILURES,
    WorkerRequest,
    error_line,
    job_failure,
    parse_event,
    relay,
    tf_config,
    worker_address,
    worker_command,
)
from mlcli.training.ray_worker import TrainingWorker

COMMAND = "mlcli train"
ACTOR_PREFIX = "mlcli-train-worker"  # the actors' names: mlcli-train-worker-<index>-<job>
PLACE_SECONDS = 60.0  # how long Ray may take to place the workers before the job gives up
CALL_SECONDS = 60.0  # an actor that does not answer a poll for this long is taken as lost
POLL_SECONDS = 0.5
SETTLE_SECONDS = 3.0  # after a failure, how long the others may take to end by themselves
STOP_SECONDS = 20.0  # from SIGTERM (the checkpoint is kept) to SIGKILL
TAIL_LINES = 40  # a worker's last lines that are no progress event, for its error


@dataclass
class Worker:
    """One placed worker as the driver follows it: its actor, address and how it ended."""

    index: int
    actor: Any
    host: str = ""
    address: str = ""
    code: int | None = None  # its child's exit code once it ended
    lost: str | None = None  # why its actor or node is gone
    stopped: bool = False  # the driver asked it to stop
    stdout: list[str] = field(default_factory=list)
    tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES)
    )

    @property
    def ended(self) -> bool:
        return self.code is not None or self.lost is not None

    @property
    def failed(self) -> bool:
        return self.lost is not None or (self.code is not None and self.code != 0)

    def name(self, workers: int) -> str:
        role = " (the chief)" if self.index == 0 else ""
        return f"worker {self.index} of {workers}{role} on {self.host or 'an unknown node'}"

    def failure(self, workers: int) -> str:
        if self.lost is not None:
            return f"{self.name(workers)}: {self.lost}"
        said = error_line(list(self.tail))
        return f"{self.name(workers)} exited with code {self.code}" + (f": {said}" if said else "")


@dataclass
class Job:
    """The workers of one `train_on_ray`, the reporter the chief's events go to, and the
    chief's run directory once it named it."""

    workers: list[Worker]
    reporter: Reporter
    verbose: bool
    run: str | None = None  # the chief's (partial) run directory, from its `run` event

    def take(self, worker: Worker, lines: Sequence[str]) -> None:
        """A worker's new stderr lines: the chief's events go to the reporter."""
        for line in lines:
            record = parse_event(line)
            if record is None:
                worker.tail.append(line)
                if self.verbose:
                    self.reporter.event(f"worker {worker.index}", line)
            elif worker.index == 0:
                if record.get("event") == "run" and record.get("message"):
                    self.run = str(record["message"])
                relay(record, self.reporter)

    def poll(self) -> None:
        """One poll of every running worker, answered within `CALL_SECONDS`."""
        import ray

        live = [worker for worker in self.workers if not worker.ended]
        refs = [worker.actor.poll.remote() for worker in live]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=CALL_SECONDS)
        answered = set(ready)
        for worker, ref in zip(live, refs, strict=True):
            if ref not in answered:
                worker.lost = f"its Ray actor did not answer for {CALL_SECONDS:g} s"
                continue
            try:
                lines, code, stdout = ray.get(ref)
            except ray.exceptions.RayError as error:
                worker.lost = f"its Ray actor died ({_first_line(error)})"
                continue
            self.take(worker, lines)
            if code is not None:
                worker.code, worker.stdout = code, stdout

    def watch(self) -> Worker | None:
        """Polls until every worker ended (None) or one failed (that worker)."""
        while True:
            self.poll()
            failed = [worker for worker in self.workers if worker.failed]
            if failed:  # one that failed on its own says more than one stopped by a peer
                own = [worker for worker in failed if worker.code in OWN_FAILURES]
                return (own or failed)[0]
            if all(worker.ended for worker in self.workers):
                return None
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """Lets the running workers end by themselves for `SETTLE_SECONDS`, then stops them."""
        import ray

        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline and not all(w.ended for w in self.workers):
            time.sleep(POLL_SECONDS)
            self.poll()
        live = [worker for worker in self.workers if not worker.ended]
        for worker in live:
            worker.stopped = True
        refs = [worker.actor.stop.remote(STOP_SECONDS) for worker in live]
        with contextlib.suppress(ray.exceptions.RayError):
            ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS + 10)
        with contextlib.suppress(ray.exceptions.RayError):
            self.poll()  # their last lines


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def _runs_folder(config: Path | None, overrides: Sequence[str], output_dir: Path | None) -> Path:
    """Where the chief writes the run, absolute; the config is checked here (exit 2) first."""
    from mlcli.config.loading import load_config

    loaded = load_config(config or "config.yaml", overrides=list(overrides))
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
        answers = ray.get([worker.actor.where.remote() for worker in workers], timeout=120)
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
        overrides, output_dir, resume, device, verbose: as `mlcli.training.train.train`'s;
            the runs folder (`output_dir`, else the config's `output.dir`) must be a path
            every worker can write and this process can read: shared storage.
        reporter: receives the chief's progress events.

    Raises:
        ConfigError: a bad request, no Ray (install mlcli[ray]), an unreachable address, or a
            cluster too small for the workers (exit 2).
        InterruptedRunError: a worker died or was stopped; the chief's partial run is kept
            for `--resume` (exit 130).
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


def run_job(job: Job, command: list[str], *, address: str, request: WorkerRequest) -> Path:
    """Starts every worker's child, follows them to the end, and returns the chief's run.

    Raises the error of the first worker that failed (`ray_cluster.job_failure`), after the
    others were stopped; `address` and `request` go into its `--resume` hint.
    """
    import ray

    addresses = [worker.address for worker in job.workers]
    environ = {} if request.gpus_per_worker else {"CUDA_VISIBLE_DEVICES": ""}
    try:
        ray.get(
            [
                worker.actor.start.remote(
                    command,
                    {**environ, "TF_CONFIG": tf_config(addresses, worker.index)},
                    os.getcwd(),
                )
                for worker in job.workers
            ],
            timeout=120,
        )
        failed = job.watch()
    except KeyboardInterrupt:
        job.stop()
        hint = request.resume_hint(address, job.run) if job.run else None
        raise job_failure("interrupted", 130, run=job.run, hint=hint) from None
    except ray.exceptions.RayError as error:
        job.stop()
        raise InterruptedRunError(f"training stopped: Ray failed ({_first_line(error)})") from error
    if failed is not None:
        cause = failed.failure(len(job.workers))
        job.stop()
        hint = request.resume_hint(address, job.run) if job.run else None
        raise job_failure(
            cause, failed.code if failed.lost is None else None, run=job.run, hint=hint
        )
    return _chief_run(job)


def _chief_run(job: Job) -> Path:
    chief = job.workers[0]
    printed = [line for line in chief.stdout if line.strip()]
    if not printed:
        raise MlcliError(f"{chief.name(len(job.workers))} exited 0 but printed no run directory")
    run = Path(printed[-1].strip())
    if not run.is_dir():
        job.reporter.warning(
            f"the run was written to {run} on {chief.host}, which this machine does not see: "
            "--output must be storage every worker and the driver reach (docs/ray.md)"
        )
    return run
