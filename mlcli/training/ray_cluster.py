"""`mlcli train --ray --workers N`: what the driver decides before and after the workers run.

Nothing here imports Ray or TensorFlow: the request checked (`WorkerRequest`), the `TF_CONFIG`
of each worker built from the addresses the workers report (worker 0 is the chief), the
command line each worker's child process runs, and the chief's JSON progress lines replayed
into the driver's reporter. `mlcli.training.ray_train` places and watches the workers.

```python
request = WorkerRequest(workers=2, cpus_per_worker=1.0)
request.check()
tf_config(["10.0.0.1:4100", "10.0.0.2:4100"], 1)
# '{"cluster": {"worker": ["10.0.0.1:4100", "10.0.0.2:4100"]}, "task": {"type": "worker", ...'
```
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli.errors import (
    ConfigError,
    DataError,
    InterruptedRunError,
    MlcliError,
    RunError,
    TrainingDivergedError,
)
from mlcli.reporting import Reporter, TrainingSummary

PLACEMENTS = ("pack", "spread")  # Ray's PACK and SPREAD placement group strategies
# A worker that ends with one of these failed on its own (its config, data, run, a divergence):
# the job ends with the same code. Any other end of any worker is an interruption (exit 130).
OWN_FAILURES: dict[int, type[MlcliError]] = {
    ConfigError.exit_code: ConfigError,
    DataError.exit_code: DataError,
    RunError.exit_code: RunError,
    TrainingDivergedError.exit_code: TrainingDivergedError,
}


@dataclass(frozen=True)
class WorkerRequest:
    """How many training workers to place on Ray, and what each one holds."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    placement: str = "pack"

    def check(self) -> None:
        """Raises `ConfigError` (exit 2) naming the value found and what is expected."""
        if self.workers < 1:
            raise ConfigError(f"--workers: expected 1 or more workers, found {self.workers}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(
                f"--cpus-per-worker: expected more than 0 CPUs, found {self.cpus_per_worker:g}"
            )
        if not self.gpus_per_worker >= 0:
            raise ConfigError(
                f"--gpus-per-worker: expected 0 or more GPUs, found {self.gpus_per_worker:g}"
            )
        if self.placement not in PLACEMENTS:
            raise ConfigError(
                f"--placement: expected {' or '.join(PLACEMENTS)}, found {self.placement!r}"
            )

    def check_capacity(self, cpus: float, gpus: float, largest_node_cpus: float) -> None:
        """Raises `ConfigError` (exit 2) when the cluster cannot hold the workers at all.

        `cpus` and `gpus` are the cluster's totals, `largest_node_cpus` its largest node's:
        one worker never spans two nodes.
        """
        needed = self.workers * self.cpus_per_worker
        if needed > cpus:
            raise ConfigError(
                f"--workers {self.workers} --cpus-per-worker {self.cpus_per_worker:g} need "
                f"{needed:g} CPUs, but the Ray cluster has {cpus:g}; ask for fewer workers or "
                "CPUs per worker, or add nodes"
            )
        if self.cpus_per_worker > largest_node_cpus:
            raise ConfigError(
                f"--cpus-per-worker {self.cpus_per_worker:g}: the largest node of the Ray "
                f"cluster has {largest_node_cpus:g} CPUs, and a worker runs on one node"
            )
        needed_gpus = self.workers * self.gpus_per_worker
        if needed_gpus > gpus:
            raise ConfigError(
                f"--workers {self.workers} --gpus-per-worker {self.gpus_per_worker:g} need "
                f"{needed_gpus:g} GPUs, but the Ray cluster has {gpus:g}"
            )

    def bundles(self) -> list[dict[str, float]]:
        """The placement group's bundles: one per worker."""
        bundle = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            bundle["GPU"] = self.gpus_per_worker
        return [dict(bundle) for _ in range(self.workers)]

    def resume_hint(self, address: str, run: str) -> str:
        """The command that continues `run` on the same kind of cluster."""
        parts = ["mlcli train --resume", run, f"--ray {address}", f"--workers {self.workers}"]
        if self.cpus_per_worker != 1:
            parts.append(f"--cpus-per-worker {self.cpus_per_worker:g}")
        if self.gpus_per_worker:
            parts.append(f"--gpus-per-worker {self.gpus_per_worker:g}")
        if self.placement != "pack":
            parts.append(f"--placement {self.placement}")
        return " ".join(parts)


def worker_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets as gRPC reads it: `[::1]:4100`."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1 to 65535)")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tf_config(addresses: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` of worker `index` in the cluster of `addresses` (worker 0: the chief).

    Raises `ValueError` for no addresses, a repeated address or an index outside them.
    """
    if not addresses:
        raise ValueError("a cluster needs at least one worker address")
    repeated = sorted({a for a in addresses if list(addresses).count(a) > 1})
    if repeated:
        raise ValueError(f"two workers cannot listen at one address: {', '.join(repeated)}")
    if not 0 <= index < len(addresses):
        raise ValueError(f"worker index {index} is outside 0 to {len(addresses) - 1}")
    return json.dumps(
        {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    )


def worker_command(
    config: Path | None,
    *,
    overrides: Sequence[str],
    output_dir: Path | None,
    resume: Path | None,
    device: str | None,
    verbose: bool,
) -> list[str]:
    """The `python -m mlcli train ...` each worker runs, its progress as JSON lines on stderr.

    Paths are made absolute here, on the driver: every worker must reach them (docs/ray.md).
    """
    command = [sys.executable, "-m", "mlcli", "train"]
    if config is not None:
        command.append(str(Path(config).resolve()))
    for override in overrides:
        command += ["--set", override]
    if output_dir is not None:
        command += ["--output", str(Path(output_dir).resolve())]
    if resume is not None:
        command += ["--resume", str(Path(resume).resolve())]
    if device is not None:
        command += ["--device", device]
    command += ["--log-format", "json"]
    if verbose:
        command.append("--verbose")
    return command


def parse_event(line: str) -> dict[str, Any] | None:
    """A JSON progress line (`{"event": ..., ...}`) as a dict; None for any other line (a
    warning from TensorFlow, the error line of a failed worker)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return None
    return record


def relay(record: dict[str, Any], reporter: Reporter) -> None:
    """Replays one of the chief's progress events (`parse_event`) into `reporter`."""
    record = dict(record)
    name = record.pop("event")
    record.pop("time", None)
    if name == "epoch" and {"epoch", "epochs", "seconds"} <= set(record):
        epoch, epochs, seconds = record.pop("epoch"), record.pop("epochs"), record.pop("seconds")
        reporter.epoch(int(epoch), int(epochs), float(seconds), record)
    elif name == "summary" and "run" in record:
        reporter.summary(_summary(record))
    elif name == "warning":
        reporter.warning(str(record.get("message", "")))
    else:
        message = record.pop("message", "")
        reporter.event(name, str(message), **record)


def _summary(record: dict[str, Any]) -> TrainingSummary:
    return TrainingSummary(
        run=str(record["run"]),
        metrics=record.get("metrics") or {},
        kept_epoch=record.get("kept_epoch") or {},
        seconds=record.get("seconds") or {},
        threshold=record.get("threshold"),
    )


def error_line(lines: Sequence[str]) -> str:
    """The last error line a worker wrote (`error: ...`), without the `error: `; else its
    last line; else an empty string."""
    for line in reversed(lines):
        text = line.strip()
        if text.startswith(("error:", "internal error:")):
            return text.removeprefix("error:").strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def job_failure(cause: str, code: int | None, *, run: str | None, hint: str | None) -> MlcliError:
    """The error the job ends with after its first failed worker.

    `cause` says which worker failed and how; `code` is its exit code (None when its actor or
    node was lost). A worker that failed on its own (`OWN_FAILURES`: its config, data, run or
    a divergence) gives its own code; anything else interrupts the job (exit 130) with the
    chief's partial `run`, which `hint` continues.
    """
    kept = ""
    if run is not None:
        kept = f"; the last completed epoch is kept in {run}"
        if hint:
            kept += f"; continue with: {hint}"
    if code in OWN_FAILURES:
        return OWN_FAILURES[code](f"{cause}{kept}")
    if run is None:
        kept = "; the chief had not started its run: nothing to resume, start again"
    return InterruptedRunError(f"training stopped: {cause}{kept}")
