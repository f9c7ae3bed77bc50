"""Loading a complete run for evaluate, predict, export and serve.

Models load with Keras `safe_mode`; anything but a `.keras` archive (legacy `.h5`, pickles) is
refused. Calling the model is `mlcli.inference.predictor`'s, decoding its outputs into labels
`mlcli.inference.labels`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcli.config.loading import load_config
from mlcli.config.schema import Config
from mlcli.errors import RunError
from mlcli.features.schema import FeatureSchema
from mlcli.runs import directory as runs
from mlcli.runs.threshold import saved_threshold


@dataclass
class LoadedRun:
    """A complete run: its folder, config, schema, the decision threshold it keeps (None: it
    keeps none) and (once loaded) Keras model."""

    run: runs.Run
    config: Config
    schema: FeatureSchema
    model: Any = None
    threshold: float | None = None


def open_run(reference: str | Path, *, with_model: bool = True) -> LoadedRun:
    """Finds a complete run by path or name and loads its config, schema and model."""
    run = runs.resolve_run(reference)
    try:
        # a ${VAR} the run was trained with need not be set to predict, evaluate or export
        config = load_config(run.file(runs.CONFIG), allow_unset=True)
    except Exception as error:  # a run's own config must parse; anything else is corruption
        raise RunError(
            f"{run.file(runs.CONFIG)}: the run's config does not load: {error}"
        ) from error
    schema = FeatureSchema.load(run.file(runs.SCHEMA))
    loaded = LoadedRun(run=run, config=config, schema=schema, threshold=saved_threshold(run))
    if with_model:
        loaded.model = load_model(run.file(runs.MODEL))
    return loaded


def load_model(path: Path) -> Any:
    """A `.keras` model, loaded with `safe_mode=True` (no arbitrary code from the file)."""
    if path.suffix != ".keras":
        raise RunError(f"{path}: only .keras models are loaded; .h5 and pickles are refused")
    from mlcli._tensorflow import import_tensorflow

    import_tensorflow()  # quietly, unless the command asked for --verbose (`set_verbose`)
    import keras

    import mlcli.layers  # noqa: F401  (registers mlcli's layers for deserialization)

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise RunError(f"{path}: the model does not load: {error}") from error
