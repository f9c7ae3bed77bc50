"""mlcli: train, evaluate, predict, export and serve Keras models on tables from a YAML config.

The Python API mirrors the command line; TensorFlow is imported only when a verb needs it.

```python
import mlcli

run = mlcli.train("examples/adult/config.yaml", overrides=["training.epochs=3"])
```
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Modules are named training, evaluation, ... so that `mlcli.train` stays the function.
_API = {
    "train": "mlcli.training.train",
    "evaluate": "mlcli.evaluation.evaluate",
    "explain": "mlcli.evaluation.explain",
    "predict": "mlcli.inference.predict",
    "export": "mlcli.exporting.export",
    "tune": "mlcli.training.tune",
    "init": "mlcli.starter.init",
    "serve": "mlcli.serving.server",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mlcli' has no attribute {name!r}")
