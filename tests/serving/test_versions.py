"""Live versions in-process, with stand-in models (no TensorFlow): which folders are versions,
the swap and the states `model_version_status` shows during it, a version that fails to load,
`--keep-versions` unloading only after the requests that hold a version, pinned versions
and their 404s through the REST routes. A real server swapping under load is in
test_versions_server.py."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcli.errors import RunError
from mlcli.exporting.signature import ServingSignature
from mlcli.features.schema import TargetSchema
from mlcli.serving import version_folders
from mlcli.serving.batching import Batcher
from mlcli.serving.servables import Servable
from mlcli.serving.version_folders import (
    InitialVersions,
    complete_versions,
    load_versions,
    model_base,
)
from mlcli.serving.versions import ModelNotFoundError, ModelVersions

SIGNATURE = ServingSignature(inputs={"x": "float32"}, target=TargetSchema("y", "regression"))


def _servable(number: int, calls: list[int] | None = None) -> Servable:
    """A model that answers its own version number for every row."""

    def call(columns: Any) -> np.ndarray:
        if calls is not None:
            calls.append(number)
        return np.full((len(columns["x"]), 1), float(number), np.float32)

    return Servable("m", str(number), SIGNATURE, call, Path(str(number)))


def _publish(base: Path, number: int) -> Path:
    """A version folder as `mlcli export` leaves it: written aside, renamed into place."""
    temporary = base / f".{number}.abc.tmp"
    temporary.mkdir(parents=True)
    (temporary / "saved_model.pb").write_bytes(b"graph")
    (temporary / "export.json").write_text("{}")
    final = base / str(number)
    os.rename(temporary, final)
    return final


class Loads:
    """The loader the versions use: stand-in models, a failure or a wait where a test says."""

    def __init__(self) -> None:
        self.tried: list[int] = []
        self.failing: set[int] = set()
        self.gate: dict[int, threading.Event] = {}
        self.calls: list[int] = []

    def __call__(self, folder: Path, number: int) -> Servable:
        self.tried.append(number)
        if number in self.gate:
            assert self.gate[number].wait(10)
        if number in self.failing:
            raise RunError(f"{folder}: the SavedModel does not load: broken")
        return _servable(number, self.calls)


def _versions(base: Path, loads: Loads, *, keep: int = 1, initial: int = 1) -> ModelVersions:
    _publish(base, initial)
    return ModelVersions(
        InitialVersions([_servable(initial, loads.calls)], base),
        batcher_for=lambda servable: Batcher(servable.call, max_rows=16, timeout_s=0.001),
        keep=keep,
        poll_seconds=3600,  # the tests call refresh() themselves
        loader=loads,
    )


def _states(versions: ModelVersions) -> dict[str, str]:
    return {str(entry["version"]): str(entry["state"]) for entry in versions.status()}


async def _answer(versions: ModelVersions, version: int | None = None) -> float:
    with versions.acquire(version) as live:
        outputs = await live.batcher.submit({"x": np.zeros((1, 1), np.float32)}, rows=1)
    return float(outputs[0, 0])


def _run(test: Callable[[], Any]) -> Any:
    return asyncio.run(test())


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(st.sampled_from("0123456789.-_tmpa~ "), min_size=1, max_size=8).filter(
        lambda name: name not in (".", "..")
    )
)
def test_only_folders_named_by_digits_are_versions(tmp_path_factory, name):
    base = tmp_path_factory.mktemp("base")
    folder = base / name
    folder.mkdir(exist_ok=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    expected = {int(name): folder} if name.isdigit() else {}
    assert complete_versions(base) == expected


def test_hidden_temporary_and_incomplete_folders_are_not_versions(tmp_path):
    _publish(tmp_path, 1)
    (tmp_path / ".2.x7.tmp").mkdir()  # an export being written
    (tmp_path / ".2.x7.tmp" / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "3").mkdir()  # no saved_model.pb (yet)
    (tmp_path / "4.tmp").mkdir()
    (tmp_path / "4.tmp" / "saved_model.pb").write_bytes(b"graph")
    assert sorted(complete_versions(tmp_path)) == [1]


def test_the_base_folder_is_found_from_the_output_or_itself(tmp_path):
    base = tmp_path / "out" / "tiny"
    _publish(base, 1)
    (tmp_path / "out" / ".tiny.x.tmp").mkdir()  # another export being written beside it
    assert model_base(tmp_path / "out") == base
    assert model_base(base) == base
    assert model_base(base / "1") is None  # one version folder: served as it is, not watched
    assert model_base(tmp_path / "nothing") is None


def test_a_new_version_is_loaded_warmed_up_then_swapped_in(tmp_path):
    loads = Loads()
    versions = _versions(tmp_path, loads)

    async def main() -> None:
        await versions.start()
        assert await _answer(versions) == 1.0
        await versions.refresh()  # nothing new
        assert loads.tried == []
        _publish(tmp_path, 2)
        await versions.refresh()
        assert loads.tried == [2]
        assert loads.calls.count(2) == 1  # its warm-up call, before it took any request
        assert await _answer(versions) == 2.0
        assert versions.get().version == "2"
        await versions.stop()

    _run(main)
    assert _states(versions) == {"2": "AVAILABLE", "1": "END"}


def test_status_shows_both_versions_while_the_new_one_loads(tmp_path):
    loads = Loads()
    loads.gate[2] = threading.Event()
    versions = _versions(tmp_path, loads)

    async def main() -> None:
        await versions.start()
        _publish(tmp_path, 2)
        refresh = asyncio.create_task(versions.refresh())
        while _states(versions).get("2") != "LOADING":
            await asyncio.sleep(0.01)
        assert _states(versions) == {"2": "LOADING", "1": "AVAILABLE"}
        # the load runs in a worker thread: requests go on being answered by version 1
        assert [await _answer(versions) for _ in range(5)] == [1.0] * 5
        with pytest.raises(ModelNotFoundError):
            versions.get(2)  # not pinnable before it is available
        loads.gate[2].set()
        await refresh
        assert await _answer(versions) == 2.0
        await versions.stop()

    _run(main)


def test_a_version_that_fails_to_load_is_reported_and_the_old_one_serves(tmp_path):
    loads = Loads()
    loads.failing.add(2)
    versions = _versions(tmp_path, loads)

    async def main() -> None:
        await versions.start()
        folder = _publish(tmp_path, 2)
        await versions.refresh()
        await versions.refresh()  # the same folder is not tried again
        assert loads.tried == [2]
        assert await _answer(versions) == 1.0
        (entry,) = versions.status(2)
        assert entry["state"] == "END"
        assert entry["status"]["error_code"] == "UNKNOWN"  # type: ignore[index]
        assert "does not load: broken" in entry["status"]["error_message"]  # type: ignore[index]
        assert _states(versions) == {"2": "END", "1": "AVAILABLE"}
        # a fixed folder published again under the same number is tried again
        loads.failing.clear()
        (folder / "saved_model.pb").unlink()
        os.rename(folder, tmp_path / ".old")
        _publish(tmp_path, 2)
        await versions.refresh()
        assert loads.tried == [2, 2]
        assert await _answer(versions) == 2.0
        await versions.stop()

    _run(main)


def test_keep_versions_unloads_an_old_version_after_its_requests(tmp_path):
    loads = Loads()
    versions = _versions(tmp_path, loads, keep=2)

    async def main() -> None:
        await versions.start()
        _publish(tmp_path, 2)
        await versions.refresh()
        assert _states(versions) == {"2": "AVAILABLE", "1": "AVAILABLE"}
        assert await _answer(versions, 1) == 1.0  # pinned
        assert await _answer(versions) == 2.0
        with versions.acquire(1) as held:  # a request on version 1, in flight
            _publish(tmp_path, 3)
            await versions.refresh()
            assert _states(versions) == {"3": "AVAILABLE", "2": "AVAILABLE", "1": "UNLOADING"}
            with pytest.raises(ModelNotFoundError, match="available: 3, 2"):
                versions.get(1)
            await asyncio.sleep(0.05)
            assert _states(versions)["1"] == "UNLOADING"  # still held
            outputs = await held.batcher.submit({"x": np.zeros((2, 1), np.float32)}, rows=2)
            assert outputs[:, 0].tolist() == [1.0, 1.0]
        while _states(versions)["1"] != "END":
            await asyncio.sleep(0.01)
        assert _states(versions) == {"3": "AVAILABLE", "2": "AVAILABLE", "1": "END"}
        await versions.stop()

    _run(main)


def test_a_removed_version_rolls_back_to_the_one_before(tmp_path):
    loads = Loads()
    versions = _versions(tmp_path, loads)

    async def main() -> None:
        await versions.start()
        _publish(tmp_path, 2)
        await versions.refresh()
        assert await _answer(versions) == 2.0
        os.rename(tmp_path / "2", tmp_path / ".2.removed")
        await versions.refresh()
        assert await _answer(versions) == 1.0
        assert loads.tried == [2, 1]
        os.rename(tmp_path / "1", tmp_path / ".1.removed")  # nothing left: go on serving
        await versions.refresh()
        assert await _answer(versions) == 1.0
        await versions.stop()

    _run(main)


def test_at_start_a_broken_newest_version_falls_back_to_an_older_one(tmp_path, monkeypatch):
    _publish(tmp_path, 1)
    _publish(tmp_path, 2)

    def load(folder: Path, number: int, **_: Any) -> Servable:
        if number == 2:
            raise RunError(f"{folder}: not served: its files changed")
        return _servable(number)

    monkeypatch.setattr(version_folders, "load_version", load)
    initial = load_versions(tmp_path)
    assert [s.version for s in initial.servables] == ["1"]
    assert initial.failed[2][1].state == "END"
    (tmp_path / "1" / "saved_model.pb").unlink()
    with pytest.raises(RunError, match="its files changed"):
        load_versions(tmp_path)  # nothing loads: the newest one's error


def _app(versions: ModelVersions) -> Any:
    from mlcli.serving.routes import create_app

    latest = versions.latest
    return create_app(
        latest.servable, batcher=latest.batcher, max_body_bytes=1 << 16, versions=versions
    )


def test_requests_pin_a_version_and_an_unknown_one_is_404(tmp_path):
    pytest.importorskip("starlette")
    loads = Loads()
    versions = _versions(tmp_path, loads, keep=2)
    body = {"instances": [{"x": 1.0}, {"x": 2.0}]}

    async def main() -> list[httpx.Response]:
        await versions.start()  # what the app's lifespan does under uvicorn
        _publish(tmp_path, 2)
        await versions.refresh()
        transport = httpx.ASGITransport(_app(versions))
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            answers = [
                await client.post("/v1/models/m:predict", json=body),
                await client.post("/v1/models/m/versions/1:predict", json=body),
                await client.post("/v1/models/m/versions/7:predict", json=body),
                await client.post("/v1/models/m/versions/one:predict", json=body),
                await client.post("/v1/models/other/versions/1:predict", json=body),
                await client.get("/v1/models/m"),
                await client.get("/v1/models/m/versions/1"),
                await client.get("/v1/models/m/versions/7"),
                await client.get("/v1/models/m/versions/2/metadata"),
            ]
        await versions.stop()
        return answers

    latest, pinned, unknown, malformed, other, status, one, missing, metadata = _run(main)
    assert latest.json() == {"predictions": [2.0, 2.0]}
    assert latest.headers["x-mlcli-model-version"] == "2"
    assert pinned.json() == {"predictions": [1.0, 1.0]}
    assert pinned.headers["x-mlcli-model-version"] == "1"
    for answer in (unknown, malformed, other, missing):
        assert answer.status_code == 404, answer.text
    assert unknown.json() == {"error": "model 'm' has no version '7' available; available: 2, 1"}
    assert "no model named 'other'" in other.json()["error"]
    assert [e["version"] for e in status.json()["model_version_status"]] == ["2", "1"]
    assert one.json()["model_version_status"][0]["state"] == "AVAILABLE"
    assert metadata.json()["model_spec"]["version"] == "2"
    assert metadata.headers["x-mlcli-model-version"] == "2"


@pytest.mark.parametrize(
    ("option", "value"),
    [("--keep-versions", "0"), ("--poll-seconds", "0"), ("--poll-seconds", "-1")],
)
def test_out_of_range_version_options_are_exit_2(tmp_path, option, value):
    from typer.testing import CliRunner

    from mlcli.cli.app import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path), option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output and f"found {value}" in result.output


def test_a_base_folder_without_a_complete_version_is_exit_4_before_tf_loads(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mlcli.cli.app import app

    def never(**_: Any) -> None:
        raise AssertionError("TensorFlow was imported")

    monkeypatch.setattr("mlcli._tensorflow.import_tensorflow", never)

    (tmp_path / "1").mkdir()  # a version folder still empty
    (tmp_path / ".2.x.tmp").mkdir()
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "0"])
    assert result.exit_code == 4, result.output
    assert f"{tmp_path}: holds no complete version folder" in result.output


def test_stopping_during_a_load_drops_that_version_and_stops_cleanly(tmp_path):
    loads = Loads()
    loads.gate[2] = threading.Event()
    versions = _versions(tmp_path, loads)
    versions.poll_seconds = 0.01  # the poller's own refresh, which stop() cancels

    async def main() -> None:
        await versions.start()
        _publish(tmp_path, 2)
        while _states(versions).get("2") != "LOADING":
            await asyncio.sleep(0.01)
        await asyncio.wait_for(versions.stop(), 10)
        loads.gate[2].set()  # the loading thread ends; nothing takes its result

    _run(main)
    assert versions.get().version == "1"
    with pytest.raises(RuntimeError, match="not started"):
        _run(lambda: _answer(versions))
