"""Training on several machines: this process's role in the cluster that `TF_CONFIG` describes.

`TF_CONFIG` is the standard environment variable of TensorFlow's distributed training; the
Kubeflow training operator (TFJob), Ray Train and Vertex AI set it on every worker:

```json
{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
 "task": {"type": "worker", "index": 0}}
```

When it names more than one worker, every `mlcli train` of the same config is one worker of a
`MultiWorkerMirroredStrategy` (`training.devices`, `training.distributed`). The chief (the `chief`
task, or worker 0 when there is none) alone writes the run directory; the other workers write
to a scratch folder that is removed when the process ends.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli.errors import ConfigError
from mlcli.runs import directory as runs

EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)
JOBS = ("chief", "worker")


@dataclass(frozen=True)
class ClusterRole:
    """This process in a cluster of `workers` training processes."""

    workers: int
    task_type: str
    task_index: int
    is_chief: bool

    @property
    def task(self) -> str:
        """`worker:1`, as TensorFlow names tasks."""
        return f"{self.task_type}:{self.task_index}"


def _fail(problem: str) -> ConfigError:
    return ConfigError(f"TF_CONFIG: {problem}; expected for example {EXAMPLE}")


def _addresses(cluster: Mapping[str, Any], job: str) -> list[str]:
    addresses = cluster.get(job, [])
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise _fail(f"cluster.{job} must be a list of host:port strings, found {addresses!r}")
    return addresses


def cluster_role(environ: Mapping[str, str] | None = None) -> ClusterRole | None:
    """This process's role when `TF_CONFIG` names several workers; None on one machine."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise _fail(f"not valid JSON ({error})") from error
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict):
        raise _fail("no `cluster` mapping")
    others = sorted(set(cluster) - set(JOBS))
    if others:
        raise _fail(
            f"the cluster has {others} jobs, but mlcli trains with MultiWorkerMirroredStrategy, "
            "which takes only `chief` and `worker` tasks (no parameter servers or evaluators)"
        )
    sizes = {job: len(_addresses(cluster, job)) for job in JOBS}
    if sizes["chief"] > 1:
        raise _fail(f"cluster.chief lists {sizes['chief']} tasks, at most 1 is allowed")
    workers = sizes["chief"] + sizes["worker"]
    if workers <= 1:
        return None  # a cluster of one is one machine
    task = spec.get("task")
    if not isinstance(task, dict):
        raise _fail("no `task` mapping naming this process's type and index")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in JOBS or sizes[task_type] == 0:
        present = [job for job in JOBS if sizes[job]]
        raise _fail(f"task.type is {task_type!r}, expected one of {present}")
    if not isinstance(task_index, int) or not 0 <= task_index < sizes[task_type]:
        raise _fail(
            f"task.index is {task_index!r}, expected 0 to {sizes[task_type] - 1} "
            f"(cluster.{task_type} lists {sizes[task_type]})"
        )
    is_chief = task_type == "chief" or (sizes["chief"] == 0 and task_index == 0)
    return ClusterRole(workers, task_type, task_index, is_chief)


def worker_scratch_run(name: str, *, resume: Path | None = None) -> runs.Run:
    """The run folder of a worker that is not the chief: temporary, removed at exit.

    Resuming, it starts as a copy of the chief's partial run (on storage every worker reads, as
    `--resume RUN` is given to all), so that every worker checks the same data fingerprints and
    restores the same weights, optimizer state, epoch and early-stopping state. The chief
    cannot write to it meanwhile: it waits for every worker before its first step.
    """
    folder = Path(tempfile.mkdtemp(prefix="mlcli-worker-"))
    atexit.register(shutil.rmtree, folder, True)
    run = runs.create_partial_run(folder, name)
    if resume is not None:
        chief = runs.Run(Path(resume))
        for artifact in (runs.MANIFEST, runs.SCHEMA, runs.HISTORY):
            if chief.file(artifact).is_file():
                shutil.copy2(chief.file(artifact), run.file(artifact))
        if chief.file(runs.CHECKPOINTS).is_dir():
            shutil.copytree(chief.file(runs.CHECKPOINTS), run.file(runs.CHECKPOINTS))
    return run
