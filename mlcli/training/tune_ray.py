"""`mlcli tune --ray [ADDRESS] [--parallel K]`: the trials of a search as Ray tasks, K at a time.

The search stays in the tuning process: Optuna's study asks for a trial, the trial's values are
proposed here (`study.ask`, in the order of the trial numbers), and the trial itself, a
complete run (`mlcli.training.trials.run_trial`), runs as one Ray task; when a task ends, its
result is told to the study and the next trial is asked for. So the folders, `trials.json` and
`best-config.yaml` are those of sequential tune, and so are the values: TPE's first
`n_startup_trials` (10) proposals are drawn at random from the seeded sampler whatever the
results, in the order they are asked. After them, a proposal sees the trials finished so far,
with the ones still running counted as "constant liars" (Optuna's default), so it differs
from what sequential tune would have proposed, as any parallel TPE does.

Plain Ray tasks rather than Ray Tune: Ray Tune's `OptunaSearch` would own the study and its
own result folders; tasks keep mlcli's study, folders and files unchanged, and cost no more
than one `ray.wait` loop.

A trial asks Ray for `cpus` CPUs (the cluster's CPUs shared among the K trials that run at
once) and limits TensorFlow's intra- and inter-op threads to them before its runtime starts,
so K trials do not oversubscribe a node. A task is never retried: a worker that dies (killed,
out of memory, its node lost) records its trial as failed with the reason, and the search
goes on. SIGINT or SIGTERM cancels the running trials, writes trials.json of the finished ones
and raises `InterruptedRunError` (exit 130).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from mlcli._ray import check_reachable, connect, parse_address, require_ray
from mlcli.errors import ConfigError, InterruptedRunError, mask_secrets
from mlcli.training.devices import parse_device
from mlcli.training.trials import (
    FAILED,
    TrialPlan,
    TrialResult,
    run_trial,
    trial_name,
    write_trials,
)

COMMAND = "mlcli tune"
WAIT_SECONDS = 0.5  # how long one `ray.wait` blocks, so that a signal is handled promptly
CANCEL_SECONDS = 30.0  # how long a stop waits for the cancelled trials' workers to end

TrialTask = Callable[[TrialPlan, int, dict[str, Any], int], TrialResult]


def check_ray_arguments(address: str, *, device: str | None) -> None:
    """Raises `ConfigError` (exit 2) for what `--ray` cannot run, before anything heavy loads:
    no Ray installed, an address that is none or does not answer within `REACH_SECONDS`, or a
    GPU device (trials ask Ray for CPUs only).
    """
    require_ray(COMMAND)
    target = parse_address(address)
    if target is not None:
        check_reachable(*target)
    if device is not None and parse_device(device).kind == "gpu":
        raise ConfigError(
            f"--device {device} with --ray: trials on Ray ask for CPUs only; "
            "use --device cpu or auto, or tune on the GPU without --ray"
        )


def trial_shape(
    *, cluster_cpus: float, node_cpus: float, trials: int, parallel: int | None
) -> tuple[int, int]:
    """(trials at once, CPUs per trial) on a cluster of `cluster_cpus`, the largest node
    having `node_cpus`.

    Without `parallel`, as many trials run at once as there are CPUs (one each), never more
    than `trials`. The CPUs are shared evenly among the trials that run at once (at least one
    each, at most a node's), so fewer trials than CPUs get several threads each.
    """
    cpus = max(1, int(cluster_cpus))
    at_once = max(1, min(parallel if parallel is not None else cpus, trials))
    per_trial = max(1, min(cpus // at_once, int(node_cpus) or 1))
    return at_once, per_trial


def limit_threads(cpus: int) -> None:
    """Limits TensorFlow's intra- and inter-op threads of this process to `cpus`.

    A Ray worker runs several trials of one search in turn: its runtime started in the first
    with the same limits, which TensorFlow then keeps.
    """
    from mlcli._tensorflow import import_tensorflow

    tf = import_tensorflow(start=False)
    with contextlib.suppress(RuntimeError):  # the runtime started already (a reused worker)
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)


def trial_task(plan: TrialPlan, number: int, values: dict[str, Any], cpus: int) -> TrialResult:
    """One trial in a Ray worker: its threads limited to `cpus`, then `run_trial`."""
    from mlcli._tensorflow import set_command

    set_command(COMMAND)
    limit_threads(cpus)
    return run_trial(plan, number, values)


def _largest_node_cpus() -> float:
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    return max((float(node.get("Resources", {}).get("CPU", 0.0)) for node in alive), default=0.0)


def _outcome(ref: Any, number: int, values: dict[str, Any], started: float) -> TrialResult:
    """The trial's result; a dead worker is a failed trial, an error in the trial is raised."""
    import ray
    from ray import exceptions

    try:
        result: TrialResult = ray.get(ref)
    except exceptions.RayTaskError as error:
        raise error.cause from None  # the trial's own error, as sequential tune raises it
    except exceptions.RayError as error:  # the worker or its node died, or ran out of memory
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return TrialResult(
            number=number,
            values=values,
            state=FAILED,
            seconds=time.monotonic() - started,
            error=mask_secrets(f"its Ray worker died ({type(error).__name__}: {reason})"),
        )
    return result


def _cancel(running: dict[Any, Any]) -> None:
    """Cancels the running trials, killing their workers; asks again for a task that a cancel
    reached while Ray was still starting its worker (that cancel can be lost)."""
    import ray

    left = list(running)
    deadline = time.monotonic() + CANCEL_SECONDS
    while left and time.monotonic() < deadline:
        for ref in left:
            with contextlib.suppress(Exception):  # a task that ended meanwhile
                ray.cancel(ref, force=True)
        _, left = ray.wait(left, num_returns=len(left), timeout=WAIT_SECONDS)


def _tell(study: Any, trial: Any, result: TrialResult) -> None:
    from optuna.trial import TrialState

    if result.score is None:  # as sequential tune's objective raises TrialPruned
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, result.score)


def search_on_ray(
    study: Any,
    plan: TrialPlan,
    *,
    propose: Callable[[Any], dict[str, Any]],
    address: str,
    trials: int,
    parallel: int | None = None,
    timeout: float | None = None,
    on_result: Callable[[TrialResult], None] = lambda result: None,
    task: TrialTask = trial_task,
) -> list[TrialResult]:
    """Runs up to `trials` trials of `study` on the Ray cluster `address`, K at a time.

    Args:
        study: the Optuna study; its trials are asked and told here.
        plan: what every trial runs (`run_trial`'s).
        propose: the values of an asked trial (its `suggest_*` calls).
        address: `mlcli._ray.connect`'s address.
        trials: how many trials at most.
        parallel: how many at once; None: as many as the cluster's CPUs (`trial_shape`).
        timeout: no new trial starts after this many seconds.
        on_result: called with each trial as it finishes.
        task: what a Ray task runs for a trial (tests give one that crashes its worker).

    Returns the finished trials, in the order they finished.
    """
    import ray

    with connect(address, command=COMMAND) as cluster:
        at_once, cpus = trial_shape(
            cluster_cpus=cluster.cpus,
            node_cpus=_largest_node_cpus(),
            trials=trials,
            parallel=parallel,
        )
        remote = ray.remote(num_cpus=cpus, max_retries=0)(task)
        started = time.monotonic()
        running: dict[Any, tuple[Any, dict[str, Any], float]] = {}
        results: list[TrialResult] = []
        asked = 0
        try:
            while True:
                while (
                    len(running) < at_once
                    and asked < trials
                    and (timeout is None or time.monotonic() - started < timeout)
                ):
                    trial = study.ask()
                    values = propose(trial)
                    ref = remote.options(name=trial_name(trial.number)).remote(
                        plan, trial.number, values, cpus
                    )
                    running[ref] = (trial, values, time.monotonic())
                    asked += 1
                if not running:
                    return results
                done, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
                for ref in done:
                    trial, values, submitted = running.pop(ref)
                    result = _outcome(ref, trial.number, values, submitted)
                    _tell(study, trial, result)
                    results.append(result)
                    on_result(result)
        except KeyboardInterrupt:
            _cancel(running)
            write_trials(plan.directory, results)
            raise InterruptedRunError(
                f"interrupted: {len(results)} trial(s) finished and {len(running)} cancelled; "
                f"the finished ones are in {plan.directory / 'trials.json'}"
            ) from None
        except BaseException:
            _cancel(running)
            raise
