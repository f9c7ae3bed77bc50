"""mlcli.training.ray_cluster: the request's checks, TF_CONFIG from the workers' addresses, the
workers' command line, the chief's events replayed, and how a failed job ends (no Ray needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlcli.errors import ConfigError, InterruptedRunError
from mlcli.reporting import Reporter, TrainingSummary
from mlcli.training.cluster import cluster_role
from mlcli.training.ray_cluster import (
    OWN_FAILURES,
    PLACEMENTS,
    WorkerRequest,
    error_line,
    job_failure,
    parse_event,
    relay,
    tf_config,
    worker_address,
    worker_command,
)

counts = st.integers(min_value=-3, max_value=64)
amounts = st.floats(min_value=-4.0, max_value=64.0, allow_nan=False)
placements = st.sampled_from([*PLACEMENTS, "strict_spread", "", "PACK"])


@given(workers=counts, cpus=amounts, gpus=amounts, placement=placements)
def test_a_request_is_accepted_exactly_when_every_value_is_in_range(
    workers: int, cpus: float, gpus: float, placement: str
) -> None:
    request = WorkerRequest(workers, cpus, gpus, placement)
    valid = workers >= 1 and cpus > 0 and gpus >= 0 and placement in PLACEMENTS
    if valid:
        request.check()
        assert len(request.bundles()) == workers
        return
    with pytest.raises(ConfigError) as raised:
        request.check()
    assert raised.value.exit_code == 2
    message = str(raised.value)
    if workers < 1:
        assert message == f"--workers: expected 1 or more workers, found {workers}"
    else:
        assert message.startswith(("--cpus-per-worker", "--gpus-per-worker", "--placement"))


@given(
    workers=st.integers(1, 16),
    cpus=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    gpus=st.sampled_from([0.0, 0.5, 1.0]),
    cluster_cpus=st.sampled_from([0.0, 1.0, 2.0, 8.0, 64.0]),
    cluster_gpus=st.sampled_from([0.0, 1.0, 8.0]),
    nodes=st.integers(1, 4),
)
def test_capacity_is_refused_exactly_when_the_cluster_cannot_hold_the_workers(
    workers: int, cpus: float, gpus: float, cluster_cpus: float, cluster_gpus: float, nodes: int
) -> None:
    request = WorkerRequest(workers, cpus, gpus)
    largest = cluster_cpus / nodes
    fits = workers * cpus <= cluster_cpus and cpus <= largest and workers * gpus <= cluster_gpus
    if fits:
        request.check_capacity(cluster_cpus, cluster_gpus, largest)
        return
    with pytest.raises(ConfigError) as raised:
        request.check_capacity(cluster_cpus, cluster_gpus, largest)
    message = str(raised.value)
    if workers * cpus > cluster_cpus:  # the numbers: asked, and what the cluster has
        assert f"need {workers * cpus:g} CPUs" in message
        assert f"has {cluster_cpus:g}" in message


def test_bundles_hold_gpus_only_when_asked() -> None:
    assert WorkerRequest(2, 1.5).bundles() == [{"CPU": 1.5}, {"CPU": 1.5}]
    assert WorkerRequest(1, 2, 1).bundles() == [{"CPU": 2, "GPU": 1}]


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
)
ports = st.integers(1, 65535)


@given(st.lists(st.tuples(hosts, ports), min_size=1, max_size=8, unique=True))
def test_every_workers_tf_config_gives_it_its_own_role_and_worker_0_is_the_chief(
    places: list[tuple[str, int]],
) -> None:
    addresses = [worker_address(host, port) for host, port in places]
    for index in range(len(addresses)):
        text = tf_config(addresses, index)
        assert json.loads(text)["cluster"]["worker"] == addresses
        role = cluster_role({"TF_CONFIG": text})
        if len(addresses) == 1:
            assert role is None  # a cluster of one trains as one machine
            continue
        assert role is not None
        assert (role.workers, role.task_type, role.task_index) == (len(addresses), "worker", index)
        assert role.is_chief == (index == 0)


@given(hosts, ports)
def test_an_address_brackets_ipv6_hosts_only(host: str, port: int) -> None:
    address = worker_address(host, port)
    assert address.endswith(f":{port}")
    assert address.startswith("[") == (":" in host)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_an_address_with_a_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        worker_address("10.0.0.1", port)


@pytest.mark.parametrize(
    ("addresses", "index", "problem"),
    [
        ([], 0, "at least one"),
        (["a:1", "b:2", "a:1"], 0, "a:1"),
        (["a:1", "b:2"], 2, "outside 0 to 1"),
        (["a:1"], -1, "outside 0 to 0"),
    ],
)
def test_a_tf_config_that_cannot_work_is_refused(
    addresses: list[str], index: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        tf_config(addresses, index)


@given(
    config=st.sampled_from([None, "config.yaml", "sub/dir/c.yaml", "/abs/c.yaml"]),
    overrides=st.lists(st.from_regex(r"[a-z.]{1,12}=[a-z0-9]{0,5}", fullmatch=True), max_size=3),
    output=st.sampled_from([None, "runs", "/shared/runs"]),
    resume=st.sampled_from([None, "runs/x/.1.partial"]),
    device=st.sampled_from([None, "cpu", "gpu:0,1"]),
    verbose=st.booleans(),
)
def test_the_worker_command_is_the_same_train_with_absolute_paths_and_json_events(
    config: str | None,
    overrides: list[str],
    output: str | None,
    resume: str | None,
    device: str | None,
    verbose: bool,
) -> None:
    command = worker_command(
        None if config is None else Path(config),
        overrides=overrides,
        output_dir=None if output is None else Path(output),
        resume=None if resume is None else Path(resume),
        device=device,
        verbose=verbose,
    )
    assert command[:4] == [sys.executable, "-m", "mlcli", "train"]
    rest = command[4:]
    if config is not None:
        assert rest[0] == str(Path(config).resolve())
    assert [rest[i + 1] for i, a in enumerate(rest) if a == "--set"] == overrides
    for flag, value in (("--output", output), ("--resume", resume)):
        given_value = [rest[i + 1] for i, a in enumerate(rest) if a == flag]
        assert given_value == ([] if value is None else [str(Path(value).resolve())])
        assert all(Path(path).is_absolute() for path in given_value)
    assert ("--device" in rest) == (device is not None)
    assert rest[rest.index("--log-format") + 1] == "json"
    assert ("--verbose" in rest) == verbose


class Recorder(Reporter):
    """Every call, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []

    def event(self, name: str, message: str = "", **fields: Any) -> None:
        self.calls.append(("event", (name, message, fields)))

    def warning(self, message: str) -> None:
        self.calls.append(("warning", message))

    def epoch(self, epoch: int, epochs: int, seconds: float, logs: dict[str, float]) -> None:
        self.calls.append(("epoch", (epoch, epochs, seconds, logs)))

    def summary(self, summary: TrainingSummary) -> None:
        self.calls.append(("summary", summary))


SUMMARY = TrainingSummary(
    run="/runs/a/1",
    metrics={"train": {"loss": 0.5, "rows": 10.0}},
    kept_epoch={"epoch": 2},
    seconds={"total": 3.0},
    threshold=0.5,
)


def _json_lines(reporter_calls: list[tuple[str, Any]]) -> list[str]:
    """What the chief writes for the same calls (a JsonReporter into a buffer)."""
    import io

    from mlcli.reporting import JsonReporter

    buffer = io.StringIO()
    chief = JsonReporter(buffer)
    for kind, value in reporter_calls:
        if kind == "event":
            chief.event(value[0], value[1], **value[2])
        elif kind == "warning":
            chief.warning(value)
        elif kind == "epoch":
            chief.epoch(*value)
        else:
            chief.summary(value)
    return buffer.getvalue().splitlines()


CALLS: list[tuple[str, Any]] = [
    ("event", ("run", "/runs/a/.1.partial", {})),
    ("event", ("data", "", {"rows": 3, "seconds": 0.25})),
    ("warning", "a warning"),
    ("epoch", (1, 3, 1.5, {"loss": 0.7, "val_loss": 0.8})),
    ("summary", SUMMARY),
    ("event", ("complete", "/runs/a/1", {})),
]


@pytest.mark.parametrize("count", range(1, len(CALLS) + 1))
def test_the_chiefs_json_events_replay_as_the_same_reporter_calls(count: int) -> None:
    calls = CALLS[:count]
    driver = Recorder()
    for line in _json_lines(calls):
        record = parse_event(line)
        assert record is not None, line
        relay(record, driver)
    assert driver.calls == calls


@pytest.mark.parametrize(
    "line",
    ["", "error: data.train: no such file", "2026 W tensorflow ...", "[1, 2]", '{"no": "event"}'],
)
def test_a_line_that_is_no_event_is_not_parsed_as_one(line: str) -> None:
    assert parse_event(line) is None


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["noise", "error: data.train: missing", "later noise"], "data.train: missing"),
        (
            ["internal error: KeyError: 'x'. This is a bug"],
            "internal error: KeyError: 'x'. This is a bug",
        ),
        (["only", "lines", ""], "lines"),
        ([], ""),
    ],
)
def test_error_line_is_the_workers_last_error(lines: list[str], expected: str) -> None:
    assert error_line(lines) == expected


@pytest.mark.parametrize("code", [None, -9, 1, 130, *OWN_FAILURES])
@pytest.mark.parametrize("run", [None, "/runs/a/.1.partial"])
def test_a_failed_job_keeps_its_workers_own_code_else_is_an_interruption(
    code: int | None, run: str | None
) -> None:
    hint = "mlcli train --resume R --ray local --workers 2"
    error = job_failure("worker 1 of 2 on h exited", code, run=run, hint=hint)
    assert "worker 1 of 2 on h exited" in str(error)
    if code in OWN_FAILURES:
        assert type(error) is OWN_FAILURES[code]
        assert error.exit_code == code
    else:
        assert isinstance(error, InterruptedRunError)
        assert error.exit_code == 130
    if run is not None:
        assert run in str(error) and hint in str(error)
    elif code not in OWN_FAILURES:
        assert "nothing to resume" in str(error)


def test_the_resume_hint_repeats_what_is_not_a_default() -> None:
    assert (
        WorkerRequest(2).resume_hint("local", "R")
        == "mlcli train --resume R --ray local --workers 2"
    )
    assert WorkerRequest(3, 2, 1, "spread").resume_hint("10.0.0.1:6379", "R") == (
        "mlcli train --resume R --ray 10.0.0.1:6379 --workers 3 --cpus-per-worker 2 "
        "--gpus-per-worker 1 --placement spread"
    )
