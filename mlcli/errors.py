"""The project's own exceptions, each mapped to one exit code of DESIGN.md.

```
MlcliError (1, a bug unless a subclass says otherwise)
├── ConfigError (2)          usage or config error: bad flag, unreadable YAML, schema violation
│   └── MlcliErrorUsage (2)  a bad command-line value, such as `--log-format xml`
├── DataError (3)            missing file, unreadable table, missing or mistyped column
├── RunError (4)             no such run, corrupt or incompatible artifacts, failed export check
│   └── SelfCheckError (4)   a check after training failed; the complete run is kept
├── QualityGateError (5)     a `--fail-under/--fail-over/--fail-on-drift` bound was missed
├── TrainingDivergedError (6) the loss became NaN or infinite
└── InterruptedRunError (130)  SIGINT/SIGTERM; the last checkpoint is kept
```

Library code raises these with a message that names the file, the dotted config key or the
column, what was found and what was expected. Only `mlcli.cli.boundary` turns them into an exit.
"""

from __future__ import annotations

import re


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
    """A metric missed an `evaluate` bound, or a column drifted past `--fail-on-drift` (exit 5)."""

    exit_code = 5


class TrainingDivergedError(MlcliError):
    """The training loss became NaN or infinite (exit 6)."""

    exit_code = 6


class InterruptedRunError(MlcliError):
    """Training was interrupted by a signal; its checkpoint is kept (exit 130)."""

    exit_code = 130


def missing_extra(what: str, needs: str, extra: str) -> ConfigError:
    """The error (exit 2) of `what` run without the optional dependency `needs`: one line
    naming the extra that installs it. The one wording of every "install mlcli[...]" message.

    Example: `missing_extra("mlcli tune", "Optuna", "tune")` reads "mlcli tune needs Optuna:
    install mlcli[tune] (pip install 'mlcli[tune]')".
    """
    install = f"pip install 'mlcli[{extra}]'"
    return ConfigError(f"{what} needs {needs}: install mlcli[{extra}] ({install})")


def require_extra(module: str, extra: str, what: str) -> None:
    """Raises `missing_extra` (exit 2) naming the extra to install when `module` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise missing_extra(what, f"the {module} package", extra)


# Secrets in messages. A URI's userinfo password (`scheme://user:PASSWORD@host`) and the
# value of a query parameter that names a credential (`?token=...`) are masked wherever they
# appear; so is every value filled from the environment into a config (`${VAR}`), once
# `remember_secret` was told it. `mlcli.cli.boundary` masks every error line and the reporters
# every event, so nothing that reaches a terminal or a CI log holds them.

MASK = "***"
SHORTEST_SECRET = 6  # shorter values would mask ordinary words ("gpu", "adam") in every line
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#:@]*:)[^\s/?#]*(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_-]?key|"
    r"access[_-]?key|signature|sig))=)[^\s&#;'\"]+",
    re.IGNORECASE,
)
_secrets: set[str] = set()


def remember_secret(value: str) -> None:
    """Masks `value` in every message from now on (a value filled from `${VAR}`)."""
    if len(value) >= SHORTEST_SECRET:
        _secrets.add(value)


def mask_secrets(text: str) -> str:
    """`text` with URI passwords, credential query values and remembered secrets as `***`.

    Example: `mask_secrets("http://ann:s3cret@host:5000/")` is `"http://ann:***@host:5000/"`.
    """
    for secret in sorted(_secrets, key=len, reverse=True):  # a longer one may hold a shorter
        text = text.replace(secret, MASK)
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _QUERY_SECRET.sub(lambda m: m.group("head") + MASK, text)
