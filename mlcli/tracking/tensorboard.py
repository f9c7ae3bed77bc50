"""TensorBoard logs: Keras's own callback writing under `<run>/logs` (`training.tensorboard`)."""

from __future__ import annotations

from typing import Any

from mlcli.config.schema import Config
from mlcli.errors import require_extra
from mlcli.runs import directory as runs

LOGS = "logs"


def tensorboard_callbacks(config: Config, run: runs.Run) -> list[Any]:
    """Keras's TensorBoard callback writing under `<run>/logs`, when the config asks for it."""
    if not config.training.tensorboard:
        return []
    require_extra("tensorboard", "tensorboard", "training.tensorboard")
    import keras

    return [keras.callbacks.TensorBoard(log_dir=str(run.file(LOGS)))]
