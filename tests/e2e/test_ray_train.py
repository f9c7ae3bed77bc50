"""`mlcli train --ray --workers 2` on the session's local Ray (2 CPUs, 1 per worker), slow:

- the shipped Adult example (fewer epochs: `EPOCHS`) completes one run whose final metrics
  match a one-process run with the same global batch within the tolerance that
  docs/devices-and-distributed.md documents for multi-worker training (0.005);
- a worker whose Ray actor is killed mid-training ends the job with exit 130 and the chief's
  partial run, which `--resume RUN --ray --workers 2` completes.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.csv as pa_csv
import pytest
import yaml
from conftest import REPO, make_table
from typer.testing import CliRunner

from mlcli.cli.app import app
from mlcli.runs.directory import HISTORY, MANIFEST, METRICS, Run, check_complete
from mlcli.training.ray_train import ACTOR_PREFIX

runner = CliRunner()
ADULT = REPO / "examples" / "adult" / "config.yaml"
EPOCHS = 2  # of the example's 30 (early stopping ends it at about 12): the test's time budget
TOLERANCE = 0.005  # docs/devices-and-distributed.md: two workers against one process
EPOCHS_KILLED = 4  # the killed run's: worker 1 is killed after the first


def _metrics(run: Path) -> dict[str, dict[str, float]]:
    return json.loads((run / METRICS).read_text())


@pytest.mark.slow
def test_two_ray_workers_train_the_adult_example_as_one_process_does(
    ray_local: Any, tmp_path: Path
) -> None:
    if not (ADULT.parent / "adult.data").is_file():
        pytest.skip("examples/adult/adult.data is not present")
    common = ["--set", f"training.epochs={EPOCHS}", "--device", "cpu", "--quiet"]
    two = runner.invoke(
        app,
        [
            "train",
            str(ADULT),
            "--ray",
            "--workers",
            "2",
            "--output",
            str(tmp_path / "ray"),
            *common,
        ],
    )
    assert two.exit_code == 0, two.output
    ray_run = Path(two.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in ray_run.parent.iterdir()) == sorted([ray_run.name, "latest"])
    check_complete(Run(ray_run))
    manifest = json.loads((ray_run / MANIFEST).read_text())
    assert manifest["device"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert (manifest["device"]["workers"], manifest["device"]["global_batch_size"]) == (2, 512)

    batch = ["--set", "training.batch_size=512"]  # the same global batch in one process
    one = runner.invoke(
        app, ["train", str(ADULT), "--output", str(tmp_path / "one"), *batch, *common]
    )
    assert one.exit_code == 0, one.output
    expected = _metrics(Path(one.stdout.strip().splitlines()[-1]))
    found = _metrics(ray_run)
    for split in ("train", "validation", "test"):
        assert found[split]["rows"] == expected[split]["rows"]
        for name, value in expected[split].items():
            assert found[split][name] == pytest.approx(value, abs=TOLERANCE), (split, name)


def _tiny_config(folder: Path) -> Path:
    pa_csv.write_csv(make_table(600, seed=2), folder / "data.csv")
    config = {
        "name": "killed",
        "seed": 5,
        "data": {"train": "data.csv", "validation": 0.2},
        "target": {"column": "label", "task": "binary"},
        "features": {"review": "text", "grade": "categorical", "exclude": ["id", "tier", "value"]},
        "model": {"hidden_units": [16]},
        "training": {"epochs": EPOCHS_KILLED, "batch_size": 32, "steps_per_execution": 1},
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _kill_worker_after_an_epoch(ray: Any, runs: Path, killed: list[str]) -> None:
    """Kills worker 1's actor once the chief's partial run has an epoch in history.csv."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        history = [p / HISTORY for p in runs.glob("killed/.*.partial")]
        if history and history[0].is_file() and len(history[0].read_text().splitlines()) >= 2:
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["name"].startswith(f"{ACTOR_PREFIX}-1-"):
                    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
                    killed.append(actor["name"])
                    return
        time.sleep(0.1)


@pytest.mark.slow
def test_a_killed_worker_ends_the_job_with_130_and_resume_completes_it(
    ray_local: Any, tmp_path: Path
) -> None:
    config = _tiny_config(tmp_path)
    killed: list[str] = []
    killer = threading.Thread(
        target=_kill_worker_after_an_epoch, args=(ray_local, tmp_path / "runs", killed)
    )
    killer.start()
    started = time.monotonic()
    stopped = runner.invoke(app, ["train", str(config), "--ray", "--workers", "2", "--quiet"])
    killer.join()
    assert killed, stopped.output
    assert stopped.exit_code == 130, stopped.output
    assert time.monotonic() - started < 240  # never a hang
    (partial,) = (tmp_path / "runs" / "killed").glob(".*.partial")
    message = stopped.stderr.strip()
    assert "worker 1 of 2" in message and "died" in message, message
    assert f"mlcli train --resume {partial} --ray local --workers 2" in message
    assert not [p for p in partial.parent.iterdir() if not p.name.startswith(".")]
    assert not [a for a in ray_local.util.list_named_actors() if a.startswith(ACTOR_PREFIX)]

    resumed = runner.invoke(
        app, ["train", "--resume", str(partial), "--ray", "--workers", "2", "--quiet"]
    )
    assert resumed.exit_code == 0, resumed.output
    run = Path(resumed.stdout.strip().splitlines()[-1])
    assert run.name == partial.name.removeprefix(".").removesuffix(".partial")
    check_complete(Run(run))
    epochs = [line.split(",")[0] for line in (run / HISTORY).read_text().splitlines()[1:]]
    assert epochs == [str(epoch) for epoch in range(EPOCHS_KILLED)]
    assert json.loads((run / MANIFEST).read_text())["resumed"]
