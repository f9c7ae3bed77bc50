"""`mlcli train --ray`: the driver following its placed workers until they end or one fails.

`run_job` starts every worker's child (`TrainingWorker.start`, with its `TF_CONFIG`), then
polls all of them every `POLL_SECONDS`, each answer within `CALL_SECONDS`: the chief's progress
events are replayed into the driver's reporter, the other lines kept for errors (and shown with
`--verbose`). A worker whose child exits non-zero, whose actor dies or whose node is lost, or
that does not answer, fails the job: the others get `SETTLE_SECONDS` to end by themselves, then
SIGTERM (the last epoch's checkpoint is kept) and SIGKILL `STOP_SECONDS` later. The job ends
with `ray_cluster.job_failure`: exit 130 and the chief's partial run to `--resume`, or the
failed worker's own code when it failed on its own (config, data, run, divergence).

A complete run that the driver does not see (the runs folder is not shared with the chief's
node) is copied back from the chief's node to the same path here (`unpack_run`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import shutil
import tarfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcli.errors import InterruptedRunError, MlcliError, RunError
from mlcli.reporting import Reporter
from mlcli.runs import directory as runs
from mlcli.training.ray_cluster import (
    OWN_FAILURES,
    WorkerRequest,
    error_line,
    job_failure,
    parse_event,
    relay,
    tf_config,
)

CALL_SECONDS = 60.0  # an actor that does not answer a poll for this long is taken as lost
POLL_SECONDS = 0.5
SETTLE_SECONDS = 3.0  # after a failure, how long the others may take to end by themselves
STOP_SECONDS = 20.0  # from SIGTERM (the checkpoint is kept) to SIGKILL
TAIL_LINES = 40  # a worker's last lines that are no progress event, for its error
FETCH_SECONDS = 600.0  # to copy a complete run back from the chief's node


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
        """Whether its child exited or its actor is gone."""
        return self.code is not None or self.lost is not None

    @property
    def failed(self) -> bool:
        """Whether it ended any other way than its child's exit 0."""
        return self.lost is not None or (self.code is not None and self.code != 0)

    def name(self, workers: int) -> str:
        """`worker 0 of 2 (the chief) on 10.0.0.1`."""
        role = " (the chief)" if self.index == 0 else ""
        return f"worker {self.index} of {workers}{role} on {self.host or 'an unknown node'}"

    def failure(self, workers: int) -> str:
        """How it failed, for the job's error: its exit code and last error line, or why its
        actor is gone."""
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
        if not live:
            return
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
                worker.lost = f"its Ray actor died ({first_line(error)})"
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
        if not live:
            return
        for worker in live:
            worker.stopped = True
        refs = [worker.actor.stop.remote(STOP_SECONDS) for worker in live]
        with contextlib.suppress(ray.exceptions.RayError):
            ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS + 10)
        with contextlib.suppress(ray.exceptions.RayError):
            self.poll()  # their last lines


def first_line(error: BaseException) -> str:
    """The first line of a Ray error (its message runs on with a traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


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
        raise InterruptedRunError(f"training stopped: Ray failed ({first_line(error)})") from error
    if failed is not None:
        cause = failed.failure(len(job.workers))
        job.stop()
        hint = request.resume_hint(address, job.run) if job.run else None
        raise job_failure(
            cause, failed.code if failed.lost is None else None, run=job.run, hint=hint
        )
    return _chief_run(job)


def _chief_run(job: Job) -> Path:
    """The run the chief printed; copied back from the chief's node when it is not here."""
    chief = job.workers[0]
    printed = [line for line in chief.stdout if line.strip()]
    if not printed:
        raise MlcliError(f"{chief.name(len(job.workers))} exited 0 but printed no run directory")
    run = Path(printed[-1].strip())
    if not run.is_dir():
        return _copy_back(job, run)
    return run


def _copy_back(job: Job, run: Path) -> Path:
    """The complete run at `run` on the chief's node, copied to the same path here."""
    import ray

    chief = job.workers[0]
    try:
        archive = ray.get(chief.actor.pack.remote(str(run)), timeout=FETCH_SECONDS)
    except ray.exceptions.RayError as error:
        raise RunError(
            f"{run}: the run is complete on the chief's node ({chief.host}), but copying it "
            f"here failed ({first_line(error)}); copy it yourself, or use an --output every "
            "node shares"
        ) from error
    copied = unpack_run(archive, run)
    job.reporter.event(
        "copied",
        f"{copied} from the chief's node {chief.host} ({len(archive) / 1e6:.1f} MB): "
        "the runs folder is not shared",
    )
    return copied


def _extract_run(archive: tarfile.TarFile, folder: Path) -> None:
    """Extracts a run's archive into `folder` with tarfile's "data" filter (no absolute paths,
    no `..`, no links out of it, no devices). Python before 3.11.4 has no filters: there, only
    plain files and folders whose names stay inside `folder` are accepted (what `pack` writes).
    """
    if hasattr(tarfile, "data_filter"):
        archive.extractall(folder, filter="data")
        return
    root = folder.resolve()
    members = archive.getmembers()
    for member in members:
        target = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
            raise tarfile.TarError(f"{member.name!r} is not a file or folder inside the run")
    archive.extractall(folder, members=members)  # every member checked above


def unpack_run(archive: bytes, run: Path) -> Path:
    """Writes a complete run from its archive (`TrainingWorker.pack`) to `run` here.

    It is unpacked into a partial folder that is renamed when complete, and `latest` points
    at it, as `mlcli train` completes a run. Raises `RunError` (exit 4) when `run` exists.
    """
    partial = runs.Run(run.parent / f".{run.name}{runs.PARTIAL_SUFFIX}")
    if run.exists():
        raise RunError(f"{run}: already exists; the chief's run was not copied over it")
    try:
        partial.path.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as unpacked:
            _extract_run(unpacked, partial.path)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:  # EOF: cut short
        shutil.rmtree(partial.path, ignore_errors=True)
        raise RunError(f"{run}: cannot write the chief's run here ({error})") from error
    return runs.complete_run(partial).path
