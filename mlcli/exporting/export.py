"""`mlcli export`: a run's model in a serving format, verified in that format's own runtime.

```
saved_model   OUTPUT/<model-name>/<version>/saved_model.pb variables/ assets/ export.json
keras         OUTPUT/model.keras export.json
tflite        OUTPUT/model.tflite export.json
onnx          OUTPUT/model.onnx export.json
```

OUTPUT defaults to `<run>/exports/<format>`. The folder is written under a temporary name beside
its final one, checked (`mlcli.exporting.check`), and renamed only when the check passes; a failed
check leaves nothing behind and raises `RunError` with the largest difference. `force` replaces
only an export mlcli wrote (`replaceable_export`), checked before anything is written.

```python
import mlcli

folder = mlcli.export("runs/adult-income/latest", format="saved_model", output="serving")
```
"""

from __future__ import annotations

import json
import platform
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mlcli import __version__, files
from mlcli._tensorflow import import_tensorflow
from mlcli.errors import ConfigError, RunError
from mlcli.exporting.check import CheckResult, compare, run_in_runtime, sample_columns
from mlcli.exporting.digest import DIGEST_KEY, export_digest
from mlcli.exporting.formats import (
    FILE_NAMES,
    FORMATS,
    check_supported,
    require_onnx,
    write_keras,
    write_onnx,
    write_saved_model,
    write_tflite,
)
from mlcli.exporting.signature import (
    EXPORT_INFO,
    ServingSignature,
    features,
    keras_signature,
    write_export_info,
)
from mlcli.features.schema import FeatureSchema
from mlcli.inference.labels import decision_threshold
from mlcli.reporting import QuietReporter, Reporter
from mlcli.runs import directory as runs
from mlcli.runs.loading import LoadedRun, load_model, open_run
from mlcli.runs.threshold import read_threshold_record


def _write_light_core(loaded: LoadedRun, reporter: Reporter) -> None:
    """Writes the run's core.onnx for the light inference path, once, while the model is
    loaded anyway (`mlcli.inference.conversion`); a failed check is recorded, not raised."""
    import importlib.util

    from mlcli.inference.choice import unencodable
    from mlcli.inference.conversion import describe_check, recorded_check, write_light_core

    wanted = unencodable(loaded.schema) is None and importlib.util.find_spec("tf2onnx")
    if not wanted or recorded_check(loaded.run) or loaded.run.file(runs.CORE_ONNX).exists():
        return
    check = write_light_core(loaded.run, loaded.model, loaded.schema)
    if check.get("passed"):
        reporter.event("light", describe_check(check))
    else:
        why = check.get("error") or f"max relative difference {check['max_relative_difference']}"
        reporter.event("light", f"core.onnx not written: its check failed ({why})")


def export(
    run: str | Path,
    *,
    format: str,
    output: str | Path | None = None,
    version: int = 1,
    force: bool = False,
    reporter: Reporter | None = None,
    verbose: bool = False,
) -> Path:
    """Exports RUN's model as `format` and checks it in its own runtime; returns the folder.

    `format` is saved_model, keras, tflite or onnx. A SavedModel goes to
    `output/<model-name>/<version>/` (TF Serving's layout); the others to `output/`.
    Raises `RunError` (exit 4) when the check finds a difference beyond its tolerance.
    """
    reporter = reporter or QuietReporter()
    if format not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, found {format!r}")
    if version < 1:
        raise ConfigError(f"--version: expected a positive integer, found {version}")
    if format == "onnx":
        require_onnx()
    # every argument and path is checked before TensorFlow loads
    loaded = open_run(run, with_model=False)
    check_supported(format, loaded.schema)
    threshold = decision_threshold(saved=loaded.threshold)
    base = Path(output) if output is not None else loaded.run.path / runs.EXPORTS / format
    final = base / loaded.config.name / str(version) if format == "saved_model" else base
    files.check_destination(final, force=force, replaceable=replaceable_export)
    import_tensorflow(verbose=verbose)
    loaded.model = load_model(loaded.run.file(runs.MODEL))
    _write_light_core(loaded, reporter)
    with files.atomic_directory(final, force=force, replaceable=replaceable_export) as folder:
        reporter.event("export", f"writing {format} to {final}")
        model_path = _write(format, loaded, folder, threshold=threshold, verbose=verbose)
        reporter.event("export", f"checking {format} in its own runtime")
        check = _check(format, loaded, model_path, threshold=threshold)
        info = _info(format, loaded, final, version, check, threshold=threshold)
        info["files"] = _written(folder)
        if format == "saved_model":
            info[DIGEST_KEY] = export_digest(folder)
        write_export_info(folder, info)
        reporter.event(
            "export",
            f"verified: max |difference| {check.max_abs_difference:.3g} over {check.rows} rows",
            max_abs_difference=check.max_abs_difference,
        )
    return final


# What a SavedModel folder holds besides what export.json lists (older exports listed less).
_SAVED_MODEL_NAMES = ("saved_model.pb", "fingerprint.pb", "variables/", "assets/")


def _written(folder: Path) -> list[str]:
    """The entries of a written export folder, as export.json lists them (folders end in /)."""
    return sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())


def replaceable_export(folder: Path) -> None:
    """Raises `ConfigError` unless `folder` is an export mlcli wrote, which --force may replace.

    That is a folder holding an `export.json` that mlcli wrote and nothing but the files it
    lists (and a SavedModel's own files); never `/`, the home directory, the working directory
    or a parent of it (`mlcli.files.check_replaceable`).
    """
    owned: list[str] = []
    try:
        info = json.loads((folder / EXPORT_INFO).read_text(encoding="utf-8"))
        if isinstance(info, dict) and info.get("format") in FORMATS:
            owned = [EXPORT_INFO, *[str(name) for name in info.get("files") or []]]
            if info["format"] == "saved_model":
                owned += _SAVED_MODEL_NAMES
    except (OSError, ValueError):  # no readable export.json: only an empty folder is replaced
        pass
    files.check_replaceable(folder, owned=owned, what="an export that mlcli wrote")


def _write(
    export_format: str, loaded: LoadedRun, folder: Path, *, threshold: float, verbose: bool
) -> Path:
    if export_format == "saved_model":
        write_saved_model(loaded.model, loaded.schema, folder, threshold=threshold, verbose=verbose)
        return folder
    path = folder / FILE_NAMES[export_format]
    if export_format == "keras":
        write_keras(loaded.run, path)
        return path
    with tempfile.TemporaryDirectory(prefix="mlcli-saved-model-") as scratch:
        saved_model = Path(scratch) / "saved_model"
        write_saved_model(
            loaded.model, loaded.schema, saved_model, threshold=threshold, verbose=verbose
        )
        if export_format == "tflite":
            write_tflite(saved_model, path, verbose=verbose)
        else:
            write_onnx(saved_model, path, loaded.schema)
    return path


def _check(
    export_format: str, loaded: LoadedRun, model_path: Path, *, threshold: float
) -> CheckResult:
    from mlcli.inference.predictor import Predictor

    columns, sample = sample_columns(loaded)
    reference = Predictor(loaded.model, loaded.schema).eager_outputs(columns)
    runtime, outputs = run_in_runtime(export_format, model_path, columns, loaded.schema)
    difference, worst, mismatches, passed = compare(
        export_format, outputs, reference, loaded.schema, threshold=threshold
    )
    check = CheckResult(
        runtime=runtime,
        rows=len(reference),
        sample=sample,
        max_abs_difference=difference,
        worst_row=worst,
        label_mismatches=mismatches,
        passed=passed,
    )
    if not passed:
        raise RunError(
            f"--format {export_format}: {runtime} differs from the trained Keras model by up to "
            f"{difference:.3g} (row {worst} of {check.rows}: {sample}; tolerance "
            f"{check.absolute_tolerance:g}*max(1, max|value|) + "
            f"{check.relative_tolerance:g}*|value|), "
            f"{mismatches} label(s) differ; nothing was written"
        )
    return check


def _versions(export_format: str) -> dict[str, str]:
    names = ["tensorflow", "keras", "numpy"]
    if export_format == "onnx":
        names += ["tf2onnx", "onnx", "onnxruntime"]
    found = {"mlcli": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _info(
    export_format: str,
    loaded: LoadedRun,
    final: Path,
    version: int,
    check: CheckResult,
    *,
    threshold: float,
) -> dict[str, Any]:
    schema = loaded.schema
    files = ["saved_model.pb", "variables/"] if export_format == "saved_model" else []
    return {
        "format": export_format,
        "path": str(final),
        "files": files or [FILE_NAMES[export_format]],
        "model_name": loaded.config.name,
        "target": schema.target.column,
        "version": version if export_format == "saved_model" else None,
        "run": str(loaded.run.path),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "signature": _signature_for(export_format, schema, threshold),
        "task": schema.target.task,
        "label_classes": schema.target.classes,
        "binary_threshold": threshold if schema.target.task == "binary" else None,
        # where a saved threshold came from (`mlcli evaluate --choose-threshold --save`)
        "binary_threshold_source": _threshold_source(loaded),
        "features": features(schema),
        "check": check.to_dict(),
        "versions": _versions(export_format),
    }


def _signature_for(export_format: str, schema: FeatureSchema, threshold: float) -> dict[str, Any]:
    if export_format == "keras":
        return keras_signature(schema)
    return ServingSignature.from_schema(schema, threshold=threshold).describe()


def _threshold_source(loaded: LoadedRun) -> dict[str, Any] | None:
    """The saved threshold's provenance (criterion, data and its SHA-256, date), if any."""
    if loaded.threshold is None or loaded.schema.target.task != "binary":
        return None
    record = read_threshold_record(loaded.run) or {}
    return {key: record.get(key) for key in ("criterion", "data", "rows", "chosen")}
