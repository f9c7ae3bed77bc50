"""The project's own exceptions, each mapped to one exit code of DESIGN.md.

```
MlcliError (1, a bug unless a subclass says otherwise)
├── ConfigError (2)          usage or config error: bad flag, unreadable YAML, schema violation
│   └── MlcliErrorUsage (2)  a bad command-line value, such as `--log-format xml`
├── DataError (3)            missing file, unreadable table, missing or mistyped column
├── RunError (4)             no such run, corrupt or incompatible artifacts, failed export check
│   └── SelfCheckError (4)   a check after training failed; the complete run is kept
├── QualityGateError (5)     an `evaluate --fail-under/--fail-over` bound was missed
├── TrainingDivergedError (6) the loss became NaN or infinite
└── InterruptedRunError (130)  SIGINT/SIGTERM; the last checkpoint is kept
```

Library code raises these with a message that names the file, the dotted config key or the
column, what was found and what was expected. Only `mlcli.cli.boundary` turns them into an exit.
"""

from __future__ import annotations


class MlcliError(Exception):
    """Base class of every error mlcli reports to the user."""

    exit_code: int = 1


class ConfigError(MlcliError):
    """The command line or the config is wrong (exit 2)."""

    exit_code = 2


class MlcliErrorUsage(ConfigError):
    """A bad command-line value (exit 2)."""

    exit_code = 2


class DataError(MlcliError):
    """A table is missing, unreadable, or lacks or mistypes a column (exit 3)."""

    exit_code = 3


class RunError(MlcliError):
    """A run directory or model is missing, incomplete or incompatible (exit 4)."""

    exit_code = 4


class SelfCheckError(RunError):
    """A check after training failed; the complete run is kept and names the figure (exit 4)."""

    exit_code = 4


class QualityGateError(MlcliError):
    """A metric missed a bound given to `mlcli evaluate` (exit 5)."""

    exit_code = 5


class TrainingDivergedError(MlcliError):
    """The training loss became NaN or infinite (exit 6)."""

    exit_code = 6


class InterruptedRunError(MlcliError):
    """Training was interrupted by a signal; its checkpoint is kept (exit 130)."""

    exit_code = 130


def require_extra(module: str, extra: str, what: str) -> None:
    """Raises `ConfigError` (exit 2) naming the extra to install when `module` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the {module} package: pip install 'mlcli[{extra}]'")
