"""Importing TensorFlow once, quietly, only in the commands that need it."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Sends file descriptor 2 to /dev/null: TensorFlow's C++ start-up logs bypass Python."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_runtime(*, verbose: bool) -> contextlib.AbstractContextManager[None]:
    """Hides what TensorFlow's C++ runtime prints (devices found, collectives) unless `verbose`."""
    return contextlib.nullcontext() if verbose else _stderr_silenced()


def import_tensorflow(*, verbose: bool = False, start: bool = True) -> ModuleType:
    """Imports TensorFlow, hiding its start-up noise unless `verbose`.

    `start=False` leaves the runtime unstarted, so that devices and a distribution strategy
    can still be chosen (`mlcli.devices.place`, which starts it).
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    with quiet_runtime(verbose=verbose):
        import tensorflow as tf

        if start:
            tf.constant(0)  # device set-up logs happen on first use
    if not verbose:
        warnings.filterwarnings("ignore", module="keras")
        warnings.filterwarnings("ignore", module="tensorflow")
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return tf
