"""mlcli.training.ray_job: how the driver follows its workers, on the session's local
Ray with stand-in actors (each poll answers the next step of a script, as `ray.put` refs), so
that no TensorFlow child runs: a clean end, a worker failing on its own, a worker whose actor
died, and the others stopped after a failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlcli.errors import DataError, InterruptedRunError, RunError
from mlcli.reporting import Reporter
from mlcli.training import ray_job
from mlcli.training.ray_cluster import WorkerRequest
from mlcli.training.ray_worker import TrainingWorker

Step = tuple[list[str], int | None, list[str]]  # what a poll answers: lines, code, stdout


class _Method:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.answer(*args)


class StandIn:
    """An actor's stand-in: `poll` answers `steps` in turn (the last one again and again),
    or a Ray error once `dies_at` polls were answered; `stop` ends it with `stop_code`."""

    def __init__(self, ray: Any, steps: list[Step], *, dies_at: int | None = None) -> None:
        self.ray, self.steps, self.dies_at = ray, list(steps), dies_at
        self.polls = 0
        self.stopped = False
        self.start = _Method(lambda *args: ray.put(4242))
        self.poll = _Method(self._poll)
        self.stop = _Method(self._stop)
        self.pack = _Method(lambda path: ray.put(TrainingWorker().pack(self.packed)))
        self.packed = ""  # the folder `pack` archives, whatever path it is asked for

    def _poll(self) -> Any:
        self.polls += 1
        if self.dies_at is not None and self.polls > self.dies_at:
            return _failed.remote()  # type: ignore[attr-defined]
        if self.stopped:
            return self.ray.put((["error: interrupted"], 130, []))
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return self.ray.put(step)

    def _stop(self, grace: float) -> Any:
        self.stopped = True
        return self.ray.put(130)


_failed: Any = None


@pytest.fixture
def ray(ray_local: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    global _failed
    if _failed is None:

        @ray_local.remote(max_retries=0)
        def failed() -> None:
            raise RuntimeError("the actor died unexpectedly")

        _failed = failed
    for name, seconds in (("POLL_SECONDS", 0.01), ("SETTLE_SECONDS", 0.2)):
        monkeypatch.setattr(ray_job, name, seconds)
    return ray_local


class Recorder(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        self.events.append((name, message))

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        self.events.append(("epoch", f"{epoch}/{epochs}"))


def _event(name: str, message: str = "", **fields: Any) -> str:
    return json.dumps({"event": name, "time": 1.0, "message": message, **fields})


RUNNING: Step = ([], None, [])
PARTIAL = "/runs/a/.1.partial"


def _job(ray: Any, *scripts: StandIn, verbose: bool = False) -> ray_job.Job:
    workers = [
        ray_job.Worker(index, actor, host="10.0.0.9", address=f"10.0.0.9:{4100 + index}")
        for index, actor in enumerate(scripts)
    ]
    return ray_job.Job(workers, Recorder(), verbose)


def _run(job: ray_job.Job) -> Path:
    return ray_job.run_job(job, ["mlcli", "train"], address="local", request=WorkerRequest(2))


def test_a_clean_end_returns_the_chiefs_run_and_relays_only_its_events(
    ray: Any, tmp_path: Path
) -> None:
    run = tmp_path / "a" / "1"
    run.mkdir(parents=True)
    chief = StandIn(
        ray,
        [
            ([_event("run", PARTIAL), "a TensorFlow log line"], None, []),
            ([json.dumps({"event": "epoch", "epoch": 1, "epochs": 2, "seconds": 0.5})], None, []),
            RUNNING,
            ([_event("complete", str(run))], 0, ["", str(run)]),
        ],
    )
    other = StandIn(ray, [([_event("run", "/tmp/scratch")], None, []), ([], 0, ["/runs/a"])])
    job = _job(ray, chief, other)
    assert _run(job) == run
    assert job.reporter.events == [  # type: ignore[attr-defined]
        ("run", PARTIAL),
        ("epoch", "1/2"),
        ("complete", str(run)),
    ]
    assert job.run == PARTIAL
    assert not chief.stopped and not other.stopped
    environs = [actor.start.calls[0][1] for actor in (chief, other)]
    assert [json.loads(e["TF_CONFIG"])["task"]["index"] for e in environs] == [0, 1]
    assert all(e["CUDA_VISIBLE_DEVICES"] == "" for e in environs)  # no GPUs were asked for


def test_a_worker_failing_on_its_own_stops_the_others_and_gives_its_code(ray: Any) -> None:
    chief = StandIn(ray, [([_event("run", PARTIAL)], None, []), RUNNING])
    other = StandIn(ray, [RUNNING, (["error: data.train: /d.csv: no such file"], 3, [])])
    job = _job(ray, chief, other)
    with pytest.raises(DataError) as raised:
        _run(job)
    message = str(raised.value)
    assert message.startswith("worker 1 of 2 on 10.0.0.9 exited with code 3: data.train")
    assert f"kept in {PARTIAL}" in message
    assert f"mlcli train --resume {PARTIAL} --ray local --workers 2" in message
    assert chief.stopped and not other.stopped
    assert job.workers[0].code == 130


@pytest.mark.parametrize("dying", [0, 1])
def test_a_worker_whose_actor_died_interrupts_the_job_with_130(ray: Any, dying: int) -> None:
    steps = [([_event("run", PARTIAL)], None, []), RUNNING]
    actors = [StandIn(ray, steps, dies_at=2 if index == dying else None) for index in (0, 1)]
    job = _job(ray, *actors)
    with pytest.raises(InterruptedRunError) as raised:
        _run(job)
    message = str(raised.value)
    assert f"worker {dying} of 2" in message and "its Ray actor died" in message
    assert raised.value.exit_code == 130
    assert actors[1 - dying].stopped  # the survivor was stopped, never left waiting
    assert f"mlcli train --resume {PARTIAL} --ray local --workers 2" in message


def test_a_failure_before_the_chief_named_its_run_says_there_is_nothing_to_resume(
    ray: Any,
) -> None:
    chief = StandIn(ray, [RUNNING])
    other = StandIn(ray, [(["internal error: boom"], 1, [])])
    with pytest.raises(InterruptedRunError, match="nothing to resume") as raised:
        _run(_job(ray, chief, other))
    assert "exited with code 1: internal error: boom" in str(raised.value)


def test_verbose_relays_every_workers_other_lines(ray: Any, tmp_path: Path) -> None:
    chief = StandIn(ray, [(["chief says"], 0, [str(tmp_path)])])
    other = StandIn(ray, [(["worker says", _event("epoch")], 0, [])])
    job = _job(ray, chief, other, verbose=True)
    assert _run(job) == tmp_path
    assert sorted(job.reporter.events) == [  # type: ignore[attr-defined]
        ("worker 0", "chief says"),
        ("worker 1", "worker says"),
    ]


def _a_complete_run(folder: Path) -> Path:
    (folder / "plots").mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"\x00weights" * 100)
    (folder / "plots" / "loss.png").write_bytes(b"png")
    return folder


def test_a_run_this_machine_does_not_see_is_copied_back_from_the_chiefs_node(
    ray: Any, tmp_path: Path
) -> None:
    elsewhere = _a_complete_run(tmp_path / "chief-node" / "runs" / "a" / "1")
    run = tmp_path / "here" / "runs" / "a" / "1"  # the same --output, not shared
    chief = StandIn(ray, [([], 0, [str(run)])])
    chief.packed = str(elsewhere)
    job = _job(ray, chief, StandIn(ray, [([], 0, [])]))
    assert _run(job) == run
    assert chief.pack.calls == [(str(run),)]
    assert (run / "model.keras").read_bytes() == b"\x00weights" * 100
    assert (run / "plots" / "loss.png").read_bytes() == b"png"
    assert (run.parent / "latest").resolve() == run.resolve()
    assert sorted(p.name for p in run.parent.iterdir()) == ["1", "latest"]  # no partial left
    assert [name for name, _ in job.reporter.events] == ["copied"]  # type: ignore[attr-defined]


def test_a_copied_run_never_replaces_one_here_nor_leaves_half_of_itself(tmp_path: Path) -> None:
    archive = TrainingWorker().pack(str(_a_complete_run(tmp_path / "chief")))
    taken = tmp_path / "runs" / "a" / "1"
    taken.mkdir(parents=True)
    with pytest.raises(RunError, match="already exists"):
        ray_job.unpack_run(archive, taken)
    broken = tmp_path / "runs" / "a" / "2"
    with pytest.raises(RunError, match="cannot write"):
        ray_job.unpack_run(archive[: len(archive) // 2], broken)
    assert sorted(p.name for p in broken.parent.iterdir()) == ["1"]


@pytest.mark.parametrize("filters", [True, False], ids=["tarfile-filters", "python-before-3.11.4"])
def test_a_copied_run_unpacks_whole_and_an_archive_reaching_outside_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: bool
) -> None:
    """With tarfile's "data" filter, and without it (Python 3.11.0-3.11.3 have none)."""
    import io
    import tarfile

    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filters")
    archive = TrainingWorker().pack(str(_a_complete_run(tmp_path / "chief")))
    run = ray_job.unpack_run(archive, tmp_path / "runs" / "a" / "1")
    assert (run / "model.keras").read_bytes() == b"\x00weights" * 100
    assert (run / "plots" / "loss.png").read_bytes() == b"png"

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as evil:
        member = tarfile.TarInfo("../../outside.txt")
        member.size = 3
        evil.addfile(member, io.BytesIO(b"bad"))
    with pytest.raises(RunError, match="cannot write"):
        ray_job.unpack_run(buffer.getvalue(), tmp_path / "runs" / "a" / "2")
    assert not (tmp_path / "runs" / "outside.txt").exists()
    assert not (tmp_path / "outside.txt").exists()
    assert sorted(p.name for p in (tmp_path / "runs" / "a").iterdir()) == ["1", "latest"]
