"""`mlcli serve BASE` on a folder of numbered versions, as a real server on port 0: a version
published mid-load (copied under a temporary name, then renamed) is swapped in with no failed
request, a broken version is reported while the old one keeps serving, the swap is logged and
counted in /metrics, and SIGTERM still exits 0."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pyarrow.csv as pa_csv
import pytest
from prometheus_client.parser import text_string_to_metric_families

CLIENTS = 8


def _publish(base: Path, source: Path, number: int) -> Path:
    """`source` published as version `number`: copied under a hidden name, then renamed."""
    temporary = base / f".{number}.copy.tmp"
    shutil.copytree(source, temporary)
    final = base / str(number)
    os.rename(temporary, final)
    return final


def _events(log: Path) -> list[dict[str, Any]]:
    records = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _start(base: Path, log: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "mlcli", "serve", str(base), "--port", "0"]
    options = ["--name", "tiny", "--poll-seconds", "0.2", "--log-format", "json"]
    with log.open("w") as stderr:
        process = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {log.read_text()}")
        serving = [e for e in _events(log) if e["event"] == "serving"]
        if serving:
            url = serving[0]["url"].split("/v1/")[0]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the server did not answer within 180 s: {log.read_text()}")


class Load:
    """Clients in threads, each sending one-row predict requests until told to stop."""

    def __init__(self, url: str, rows: list[dict[str, Any]]) -> None:
        self.url, self.rows = url, rows
        self.answered: Counter[str] = Counter()  # by the version that answered
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            sent = 0
            while not self.stopping.is_set():
                row = self.rows[(index + sent * CLIENTS) % len(self.rows)]
                sent += 1
                try:
                    response = client.post("/v1/models/tiny:predict", json={"instances": [row]})
                except httpx.HTTPError as error:
                    self.failures.append(f"{type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                else:
                    self.answered[response.headers["x-mlcli-model-version"]] += 1

    def wait_for(self, version: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while self.answered[version] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.answered[version] >= 20, (dict(self.answered), self.failures[:3])


def _status(url: str) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{url}/v1/models/tiny", timeout=10).json()
    return {entry["version"]: entry for entry in answer["model_version_status"]}


def _wait_for_state(url: str, version: str, state: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _status(url).get(version, {}).get("state") == state:
            return
        time.sleep(0.1)
    pytest.fail(f"version {version} never reached {state}: {_status(url)}")


@pytest.mark.slow  # an export, a server and its loads: about a minute on 2 busy cores
def test_a_version_swaps_in_under_load_and_a_broken_one_leaves_the_old_serving(
    trained_runs, tmp_path
):
    from mlcli.exporting.export import export

    base = export(trained_runs["binary"], format="saved_model", output=tmp_path).parent
    first = base / "1"
    rows = pa_csv.read_csv(trained_runs["data"]).slice(0, 50).to_pylist()
    log = tmp_path / "serve.log"
    process, url = _start(base, log)
    load = Load(url, rows)
    try:
        for thread in load.threads:
            thread.start()
        load.wait_for("1")
        _publish(base, first, 2)
        load.wait_for("2")
        broken = base / ".3.copy.tmp"
        shutil.copytree(first, broken)
        info = json.loads((broken / "export.json").read_text())
        info["digest"] = "sha256:" + "0" * 64  # as if its files had changed since the export
        (broken / "export.json").write_text(json.dumps(info))
        os.rename(broken, base / "3")
        _wait_for_state(url, "3", "END")
        _wait_for_state(url, "1", "END")  # unloaded (--keep-versions 1)
        served_after = sum(load.answered.values())
        time.sleep(0.5)
        assert sum(load.answered.values()) > served_after  # still answering
    finally:
        load.stopping.set()
        for thread in load.threads:
            thread.join(60)
    try:
        assert load.failures == []
        status = _status(url)
        assert status["2"]["state"] == "AVAILABLE"
        assert status["3"]["status"]["error_code"] == "UNKNOWN"
        assert "its files changed" in status["3"]["status"]["error_message"]
        pinned = httpx.post(
            f"{url}/v1/models/tiny/versions/1:predict", json={"instances": rows[:1]}, timeout=10
        )
        assert pinned.status_code == 404
        scraped = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    loads = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "mlcli_model_loads_total"
    }
    assert loads == {"success": 2.0, "failure": 1.0}
    events = Counter(event["event"] for event in _events(log))
    for name in ("version_loading", "version_available", "version_swap", "version_unloaded"):
        assert events[name] >= 1, name
    warnings = [e["message"] for e in _events(log) if e["event"] == "warning"]
    assert any("version 3: not loaded" in message for message in warnings)
