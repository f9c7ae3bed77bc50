"""Importing TensorFlow once, quietly, only in the commands that need it.

Importing TensorFlow and Keras takes about 5 s of one core on the 2-core machine this was
measured on. `mlcli train` starts that import on a thread (`start_import`) and reads, checks
and encodes its data meanwhile: pyarrow's readers and compute kernels release the GIL, so the
two overlap. The first `import_tensorflow` call on the main thread waits for it.

TensorFlow and Keras are the `train` extra, not core dependencies: where they are not
installed, both functions raise one `ConfigError` (exit 2), "mlcli train needs TensorFlow:
install mlcli[train] (...)", naming the command that `set_command` was told.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from mlcli.errors import ConfigError, missing_extra

_importer: threading.Thread | None = None
_import_failure: list[BaseException] = []
_lock = threading.Lock()
_verbose = [False]  # what an import that names no verbosity does (`set_verbose`)
_command = ["this command"]  # what the error of a missing TensorFlow names (`set_command`)
_NEEDED = ("tensorflow", "keras")  # the `train` extra's packages that mlcli imports itself


def set_verbose(verbose: bool) -> None:
    """Chooses, without importing anything, whether a later import shows TensorFlow's logs.

    A command sets it from `--verbose` and checks its arguments, paths and data first: the
    library imports TensorFlow (`import_tensorflow()`) only where it loads the model.
    """
    _verbose[0] = verbose


def set_command(name: str) -> None:
    """Names the command (`mlcli train`) in the error of a missing TensorFlow."""
    _command[0] = name


def _not_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a blocked import (`sys.modules[name] = None`)
        return True


def _needs_tensorflow() -> ConfigError:
    return missing_extra(_command[0], "TensorFlow", "train")


def require_tensorflow() -> None:
    """Raises `ConfigError` (exit 2, "install mlcli[train]") unless TensorFlow and Keras are
    installed; imports neither (a few milliseconds)."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return
    if any(_not_installed(name) for name in _NEEDED):
        raise _needs_tensorflow()


def _is_missing_tensorflow(error: BaseException) -> bool:
    name = getattr(error, "name", None) or ""
    return isinstance(error, ModuleNotFoundError) and name.split(".")[0] in _NEEDED


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Sends file descriptor 2 to /dev/null: TensorFlow's C++ start-up logs bypass Python.

    Python's own writes meanwhile (another thread's progress events, an error message) go
    through `sys.stderr`, which is pointed at a copy of the real stderr for the duration.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    original = sys.stderr
    try:  # only a stream over fd 2 needs the copy: a capturing stream (pytest's) writes elsewhere
        writes_to_fd2 = original.fileno() == 2
    except (AttributeError, OSError, ValueError):
        writes_to_fd2 = False
    # never closed: another thread may still hold it when fd 2 comes back
    copy = io.TextIOWrapper(
        io.FileIO(saved, "w", closefd=False),
        encoding=getattr(original, "encoding", None) or "utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        if writes_to_fd2:
            sys.stderr = copy
        os.dup2(devnull, 2)
        yield
    finally:
        copy.flush()
        os.dup2(saved, 2)
        if sys.stderr is copy:
            sys.stderr = original
        os.close(devnull)


def quiet_runtime(*, verbose: bool) -> contextlib.AbstractContextManager[None]:
    """Hides what TensorFlow's C++ runtime prints (devices found, collectives) unless `verbose`."""
    return contextlib.nullcontext() if verbose else _stderr_silenced()


def _import(*, verbose: bool, start: bool) -> ModuleType:
    require_tensorflow()
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    with quiet_runtime(verbose=verbose):
        try:
            import tensorflow as tf
        except ModuleNotFoundError as error:
            if _is_missing_tensorflow(error):
                raise _needs_tensorflow() from error
            raise

        if start:
            tf.constant(0)  # device set-up logs happen on first use
    if not verbose:
        warnings.filterwarnings("ignore", module="keras")
        warnings.filterwarnings("ignore", module="tensorflow")
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


# Keras imports scikit-learn at start-up only for its wrappers, which mlcli never calls:
# about 1 s of the import here (with SciPy). The background import skips it; it imports
# normally later, where mlcli itself needs it (evaluation reports).
_SKIPPED = frozenset({"sklearn"})


class _SkipOnThread(importlib.abc.MetaPathFinder):
    """Makes `import sklearn` fail on one thread only."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if threading.current_thread() is self.thread and fullname.split(".")[0] in _SKIPPED:
            raise ModuleNotFoundError(f"{fullname} is imported later", name=fullname)


def _import_on_thread(verbose: bool) -> None:
    skip = _SkipOnThread(threading.current_thread())
    sys.meta_path.insert(0, skip)
    try:
        _import(verbose=verbose, start=False)
        import keras  # noqa: F401
    except BaseException as error:  # handed to the main thread by import_tensorflow
        _import_failure.append(error)
    finally:
        sys.meta_path.remove(skip)


def start_import(*, verbose: bool = False) -> None:
    """Starts importing TensorFlow and Keras (the runtime unstarted) on a thread.

    The modules the data path needs are imported first, here, so that the two threads never
    import the same module at once, pandas aside: Keras imports it on the thread, and pyarrow's
    first compute call on the main thread (from a function, holding no import lock) waits for
    that import to finish. Importing pandas here instead would delay the thread by 0.3 s.
    Does nothing when TensorFlow is already imported; raises `ConfigError` (exit 2) at once
    when it is not installed (`require_tensorflow`).
    """
    global _importer
    require_tensorflow()
    with _lock:
        if _importer is not None or "tensorflow" in sys.modules:
            return
        import numpy  # noqa: F401
        import pyarrow.compute
        import pyarrow.csv
        import pyarrow.parquet  # noqa: F401

        _importer = threading.Thread(
            target=_import_on_thread, args=(verbose,), name="mlcli-import-tensorflow"
        )
        _importer.start()


def import_tensorflow(*, verbose: bool | None = None, start: bool = True) -> ModuleType:
    """Imports TensorFlow, hiding its start-up noise unless `verbose` (`set_verbose`'s if None).

    Waits for an import `start_import` began. `start=False` leaves the runtime unstarted,
    so that devices and a distribution strategy can still be chosen (`mlcli.training.devices.place`,
    which starts it).
    """
    importer = _importer
    if importer is not None and importer is not threading.current_thread():
        importer.join()
        if _import_failure:
            failure = _import_failure[0]
            if _is_missing_tensorflow(failure):
                raise _needs_tensorflow() from failure
            raise failure
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    return _import(verbose=_verbose[0] if verbose is None else verbose, start=start)
