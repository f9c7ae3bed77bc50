"""The one error boundary and the one exit path of the command line.

`run_guarded` runs a command's action: mlcli's own errors (and a pydantic `ValidationError`
that reaches it) become one line on stderr and their exit code (DESIGN.md), SIGINT and SIGTERM
become exit 130, anything else is exit 1 with a request for a bug report, and tracebacks show
only with `--verbose`. Every line is masked: URI passwords and `${VAR}` values read `***`.
`exit_process` ends the process once the app returns. Nothing below `mlcli.cli` prints an
error or exits.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from mlcli._tensorflow import set_command
from mlcli.errors import ConfigError, MlcliError, mask_secrets

T = TypeVar("T")

INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, as a Unix tool ends when `| head` closes its output

_stop_requested: list[int] = []  # the signals received while an action runs


def _stderr() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def _interrupt(signum: int, frame: Any) -> None:
    _stop_requested.append(signum)
    raise KeyboardInterrupt


def _validation_message(error: Exception) -> str | None:
    """A pydantic `ValidationError` as one line, or None for any other exception.

    pydantic is looked up only once loaded: `mlcli --help` does not import it.
    """
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(error, pydantic.ValidationError):
        return None
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors()
    ]
    return f"{error.title}: {'; '.join(problems)}"


def _fail(message: str, code: int, *, verbose: bool) -> NoReturn:
    """One line on stderr (after the traceback with --verbose), then exit `code`.

    Both are masked (`mask_secrets`): a password in a URI or a value filled from `${VAR}`
    never reaches a terminal or a CI log.
    """
    if verbose:
        sys.stderr.write(mask_secrets(traceback.format_exc()))
    _stderr().print(mask_secrets(message), markup=False)
    raise typer.Exit(code) from None


def _unexpected(error: Exception, *, verbose: bool) -> NoReturn:
    """An exception that is not mlcli's own: an interruption if a stop was asked, else a bug.

    A failure that follows SIGTERM is the stop it asked for (exit 130), not a bug: a worker of
    a cluster stopped at the same time can make the chief's collective fail before the chief's
    own KeyboardInterrupt arrives.
    """
    if _stop_requested:
        _fail(
            f"error: interrupted ({type(error).__name__} while stopping)",
            INTERRUPTED,
            verbose=verbose,
        )
    invalid = _validation_message(error)
    if invalid is not None:
        _fail(f"error: {invalid}", ConfigError.exit_code, verbose=verbose)
    _fail(
        f"internal error: {type(error).__name__}: {error}. This is a bug in mlcli; "
        "please report it with the output of the same command run with --verbose.",
        1,
        verbose=verbose,
    )


def _command_name(action: Callable[..., Any]) -> str | None:
    """The command whose module defined `action` (one module per command): `mlcli train`."""
    module = getattr(action, "__module__", None) or ""
    package, _, name = module.rpartition(".")
    if package != __package__ or name in {"app", "boundary", "options", "views"}:
        return None
    return f"mlcli {name}"


def run_guarded(action: Callable[[], T], *, verbose: bool) -> T:
    """Runs a command's action behind the error boundary and returns what it returns.

    Raises `typer.Exit` with the exit code of DESIGN.md after one line on stderr; SIGTERM
    while the action runs is turned into KeyboardInterrupt, as SIGINT is. A command that
    needs TensorFlow where it is not installed names itself in that error (`set_command`).
    """
    command = _command_name(action)
    if command is not None:
        set_command(command)
    _stop_requested.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return action()
    except MlcliError as error:
        _fail(f"error: {error}", error.exit_code, verbose=verbose)
    except KeyboardInterrupt:
        _stderr().print("error: interrupted", markup=False)
        raise typer.Exit(INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as error:
        _unexpected(error, verbose=verbose)
    finally:
        signal.signal(signal.SIGTERM, previous)


def stdout_closed() -> NoReturn:
    """Ends a command whose stdout was closed (`| head`) quietly, as Unix tools do.

    stdout is pointed at /dev/null first so that the interpreter's final flush cannot fail
    again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    raise typer.Exit(BROKEN_PIPE)


def exit_process(app: Callable[[], Any]) -> NoReturn:
    """Runs the Typer app and ends the process with its exit code.

    After a command that loaded TensorFlow the process ends without the interpreter's
    teardown, which unloads TensorFlow's modules and C++ runtime for over a second here and
    writes nothing: the output streams are flushed and the atexit handlers run first.
    """
    try:
        app()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if isinstance(code, str):
        print(mask_secrets(code), file=sys.stderr)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code if isinstance(code, int) else int(code is not None))
