"""`GET /metrics`: after any mix of requests (good, 400, 404, 405, an unknown path), the
Prometheus text that the server writes parses with prometheus_client's own parser and counts
exactly what was sent, by route, protocol and status; the rows predicted, the batches' rows and
the load times follow."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow.csv as pa_csv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from mlcli.reporting import QuietReporter
from mlcli.serving.metrics import REST, UNMATCHED, ServerMetrics, batch_buckets

PREDICT = "/v1/models/{name}:predict"
VERSIONED_PREDICT = "/v1/models/{name}/versions/{version}:predict"
STATUS = "/v1/models/{name}"
MAX_BATCH = 16


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value, read by prometheus_client."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=1 << 20))
def test_batch_buckets_are_powers_of_two_up_to_the_largest_batch(max_batch_size):
    buckets = batch_buckets(max_batch_size)
    assert list(buckets) == sorted(set(buckets))
    assert buckets[-1] == max_batch_size
    assert all(bound == 2 ** int(bound).bit_length() / 2 for bound in buckets[:-1])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["/healthz", PREDICT, UNMATCHED]),
            st.sampled_from([200, 400, 404, 413, 503]),
            st.floats(min_value=0, max_value=20),
        ),
        max_size=30,
    )
)
def test_each_request_is_counted_once_under_its_labels(requests):
    metrics = ServerMetrics(max_batch_size=MAX_BATCH)
    for route, status, seconds in requests:
        metrics.observe_request(route, REST, status, seconds)
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    samples = _samples(body.decode())
    sent = Counter((route, status) for route, status, _ in requests)
    for (route, status), count in sent.items():
        labels = {"route": route, "protocol": REST, "status": str(status)}
        assert _value(samples, "mlcli_requests_total", **labels) == count
    for route in {route for route, _, _ in requests}:
        timed = [seconds for r, _, seconds in requests if r == route]
        count = _value(samples, "mlcli_request_duration_seconds_count", route=route, protocol=REST)
        total = _value(samples, "mlcli_request_duration_seconds_sum", route=route, protocol=REST)
        assert count == len(timed)
        assert total == pytest.approx(sum(timed))


def test_two_servers_in_one_process_count_apart():
    first, second = ServerMetrics(max_batch_size=4), ServerMetrics(max_batch_size=4)
    first.observe_batch(3)
    samples = _samples(second.exposition()[0].decode())
    assert _value(samples, "mlcli_batch_size_rows_count") == 0


@pytest.fixture(scope="module")
def client(trained_runs) -> Iterator[Any]:
    """The app that `mlcli serve` runs for the binary run (as `tiny`), lifespan included."""
    from starlette.testclient import TestClient

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.servables import load_servable
    from mlcli.serving.server import ServeOptions, _app

    servable = load_servable(trained_runs["binary"], name="tiny")
    app = _app(servable, ServeOptions(max_batch_size=MAX_BATCH), QuietReporter())
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def rows(trained_runs) -> list[dict[str, Any]]:
    return pa_csv.read_csv(trained_runs["data"]).slice(0, 40).to_pylist()


# what a request is: (method, path, body, route label, status)
def _request(kind: str, size: int, rows: list[dict[str, Any]]) -> tuple:
    chosen = rows[:size]
    columns = {name: [row[name] for row in chosen] for name in chosen[0]}
    return {
        "rows": ("POST", "/v1/models/tiny:predict", {"instances": chosen}, PREDICT, 200),
        "columns": ("POST", "/v1/models/tiny:predict", {"inputs": columns}, PREDICT, 200),
        "versioned": (
            "POST",
            "/v1/models/tiny/versions/1:predict",
            {"instances": chosen},
            VERSIONED_PREDICT,
            200,
        ),
        "bad row": (
            "POST",
            "/v1/models/tiny:predict",
            {"instances": [{**chosen[0], "age": "old"}]},
            PREDICT,
            400,
        ),
        "unknown model": ("POST", "/v1/models/other:predict", {"instances": chosen}, PREDICT, 404),
        "unknown path": ("GET", "/v2/nothing", None, UNMATCHED, 404),
        "wrong method": ("GET", "/v1/models/tiny:predict", None, PREDICT, 405),
        "status": ("GET", "/v1/models/tiny", None, STATUS, 200),
        "health": ("GET", "/healthz", None, "/healthz", 200),
    }[kind]


def _scrape(client: Any) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return _samples(response.text)


KINDS = ["rows", "columns", "versioned", "bad row", "unknown model", "unknown path"]
KINDS += ["wrong method", "status", "health"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sent=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 40)), max_size=12))
def test_a_scrape_counts_exactly_the_requests_sent_since_the_last(client, rows, sent):
    before = _scrape(client)
    expected: Counter[tuple[str, int]] = Counter()
    predicted = 0
    for kind, size in sent:
        method, path, body, route, status = _request(kind, size, rows)
        content = None if body is None else json.dumps(body)
        response = client.request(method, path, content=content)
        assert response.status_code == status, (kind, response.text)
        expected[(route, status)] += 1
        predicted += size if status == 200 and body is not None else 0
    expected[("/metrics", 200)] += 1  # the first scrape is counted once it is answered
    after = _scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    for (route, status), count in expected.items():
        labels = {"route": route, "protocol": REST, "status": str(status)}
        assert delta("mlcli_requests_total", **labels) == count, (route, status)
    for route in {route for route, _ in expected}:
        count = sum(n for (r, _), n in expected.items() if r == route)
        labels = {"route": route, "protocol": REST}
        assert delta("mlcli_request_duration_seconds_count", **labels) == count
    total = sum(v for (name, _), v in after.items() if name == "mlcli_requests_total")
    total -= sum(v for (name, _), v in before.items() if name == "mlcli_requests_total")
    assert total == sum(expected.values())  # nothing else was counted
    model = {"model": "tiny", "version": "1"}
    assert delta("mlcli_rows_predicted_total", **model) == predicted
    assert delta("mlcli_batch_size_rows_sum") == predicted  # every row goes through one batch
    assert _value(after, "mlcli_queue_depth") == 0


def test_the_warm_up_is_one_batch_and_the_load_times_are_there(trained_runs):
    from starlette.testclient import TestClient

    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()
    from mlcli.serving.servables import load_servable
    from mlcli.serving.server import ServeOptions, _app

    servable = load_servable(trained_runs["regression"], name="r")
    with TestClient(_app(servable, ServeOptions(), QuietReporter())) as fresh:
        samples = _scrape(fresh)
    assert _value(samples, "mlcli_batch_size_rows_count") == 1
    assert _value(samples, "mlcli_batch_size_rows_sum") == 1
    assert _value(samples, "mlcli_rows_predicted_total", model="r", version="1") == 0
    for phase in ("load", "warmup"):
        seconds = _value(samples, "mlcli_model_load_seconds", model="r", version="1", phase=phase)
        assert seconds > 0, phase
    assert not any(name == "mlcli_requests_total" for name, _ in samples)


def test_a_scraper_asking_for_openmetrics_gets_it(client):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse

    accept = "application/openmetrics-text; version=1.0.0"
    response = client.get("/metrics", headers={"accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    names = {family.name for family in parse(response.text)}
    assert {"mlcli_requests", "mlcli_rows_predicted", "mlcli_queue_depth"} <= names
