"""What `GET /metrics` tells Prometheus about a running `mlcli serve`, with `prometheus_client`.

```
mlcli_requests_total{route, protocol, status}         requests answered
mlcli_request_duration_seconds{route, protocol}       their latency (histogram)
mlcli_batch_size_rows                                 rows per model call (histogram)
mlcli_queue_depth                                     requests waiting for the model
mlcli_rows_predicted_total{model, version}            rows answered by predict requests
mlcli_model_load_seconds{model, version, phase}       phase "load" and "warmup"
mlcli_model_loads_total{outcome}                      versions loaded: success or failure
```

`route` is the route's template (`/v1/models/{name}:predict`), or `unmatched` for a path no
route takes, so a scan of random URLs cannot make a series per path; `protocol` is `v2` for
the Open Inference Protocol's routes (`/v2/...`), `rest` for every other HTTP route, `grpc` for
TF Serving's gRPC API (`serving.grpc`: `route` is the method's path, `status` the gRPC code's
name). Each figure is recorded where it is known: requests by `routes.AccessLog` (and
`serving.grpc`), batches and the queue by the `Batcher`'s callbacks, rows predicted by the
predict routes (and Predict), loads and their times by `serving.versions`.
The metrics live in a registry of the server's own, not prometheus_client's global one, so that
several apps in one process (tests) count apart.

With several worker processes (`--workers N`), `prometheus_client`'s multiprocess mode adds the
workers' figures up: the server points `PROMETHEUS_MULTIPROC_DIR` at a fresh folder before
the workers start (each writes its values there), and a scrape, whichever worker answers it,
reads them all. The queue depth is the sum over the live workers, the load times the slowest
worker's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

REST = "rest"
V2 = "v2"  # the Open Inference Protocol's routes, /v2/...
UNMATCHED = "unmatched"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# from a model call of a small batch (about a millisecond) to a request that waits long
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Powers of two up to `max_batch_size`, and `max_batch_size` itself."""
    bounds = {float(max_batch_size)}
    size = 1
    while size < max_batch_size:
        bounds.add(float(size))
        size *= 2
    return tuple(sorted(bounds))


class ServerMetrics:
    """The metrics of one server (one app), in its own `CollectorRegistry`.

    Args:
        max_batch_size: the batcher's largest batch: the batch size histogram's top bucket.
        multiprocess_dir: the folder of prometheus_client's multiprocess mode, where the
            workers of one server write (`PROMETHEUS_MULTIPROC_DIR` must name it before
            `prometheus_client` is imported); None for a server of one process.

    Example:

    ```python
    metrics = ServerMetrics(max_batch_size=256)
    metrics.observe_request("/healthz", REST, 200, 0.001)
    body, content_type = metrics.exposition()
    ```
    """

    def __init__(self, *, max_batch_size: int, multiprocess_dir: str | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        registry = self.registry
        self.requests = Counter(
            "mlcli_requests",
            "Requests answered, by route template, protocol and status code",
            ["route", "protocol", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "mlcli_request_duration_seconds",
            "Time from a request's headers to its answer, by route template and protocol",
            ["route", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "mlcli_batch_size_rows",
            "Rows per model call (the warm-up call included)",
            buckets=batch_buckets(max_batch_size),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "mlcli_queue_depth",
            "Predict requests waiting for a model call",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.rows_predicted = Counter(
            "mlcli_rows_predicted",
            "Rows answered by predict requests",
            ["model", "version"],
            registry=registry,
        )
        self.load_seconds = Gauge(
            "mlcli_model_load_seconds",
            "Seconds to load the model (phase=load) and to make its first call (phase=warmup)",
            ["model", "version", "phase"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.model_loads = Counter(
            "mlcli_model_loads",
            "Model versions loaded (the first ones and live ones), by outcome",
            ["outcome"],
            registry=registry,
        )

    def observe_request(self, route: str, protocol: str, status: int | str, seconds: float) -> None:
        """Counts one answered request and its latency (status: HTTP's code, gRPC's name)."""
        self.requests.labels(route, protocol, str(status)).inc()
        self.latency.labels(route, protocol).observe(seconds)

    def observe_batch(self, rows: int) -> None:
        """One model call on `rows` rows (the `Batcher`'s `on_batch`)."""
        self.batch_rows.observe(rows)

    def set_queue_depth(self, depth: int) -> None:
        """The requests now waiting (the `Batcher`'s `on_queue`)."""
        self.queue_depth.set(depth)

    def observe_predicted(self, model: str, version: str, rows: int) -> None:
        """`rows` rows answered by a predict request."""
        self.rows_predicted.labels(model, version).inc(rows)

    def set_load_seconds(self, model: str, version: str, phase: str, seconds: float) -> None:
        """How long a phase of making the model ready took (`load` or `warmup`)."""
        self.load_seconds.labels(model, version, phase).set(seconds)

    def observe_model_load(self, outcome: str) -> None:
        """A model version loaded (`success`) or did not (`failure`)."""
        self.model_loads.labels(outcome).inc()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body of `GET /metrics` and its content type, in the format that the request's
        `Accept` header asks for (Prometheus' text format unless it asks for OpenMetrics), as
        prometheus_client negotiates it. In multiprocess mode, every worker's values, read
        from the shared folder.
        """
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        registry: Any = self.registry
        if self.multiprocess_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type

    def close(self) -> None:
        """Drops this process's live gauges (the queue depth) from the shared folder, if any."""
        if self.multiprocess_dir is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid(), self.multiprocess_dir)


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode that this process was given."""
    return os.environ.get(MULTIPROCESS_ENV) or None


@contextlib.contextmanager
def shared_metrics_folder() -> Iterator[None]:
    """A fresh folder for the workers' metrics (prometheus_client's multiprocess mode), named
    by `PROMETHEUS_MULTIPROC_DIR` for the workers to come, and removed once they have ended:
    a folder left from an earlier server would add its counts to this one's."""
    folder = tempfile.mkdtemp(prefix="mlcli-metrics-")
    previous = os.environ.get(MULTIPROCESS_ENV)
    os.environ[MULTIPROCESS_ENV] = folder
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)
