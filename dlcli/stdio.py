"""File-descriptor-level stderr redirection.

Native code (TensorFlow's start-up, the TFLite converter, LiteRT, TFLite Micro) writes
to file descriptor 2 directly, below Python's ``sys.stderr``; only moving fd 2 hides or
captures it. One mechanism, used by the CLI's quieting and by the MCU packager.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def redirect_fd2(target: IO) -> Iterator[None]:
    """Point fd 2 at ``target`` (an open file) for the duration; restore it afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def silenced_fd2() -> Iterator[None]:
    with open(os.devnull, "w") as devnull, redirect_fd2(devnull):
        yield


_EXIT_SILENCED = False


def silence_fd2_at_exit() -> None:
    """Point fd 2 at /dev/null once Python has finished (an ``atexit`` hook): LiteRT's
    process-wide accelerator registry logs its teardown from C++ destructors that run after
    every dlcli line was written. Python errors are printed before ``atexit`` hooks run."""
    global _EXIT_SILENCED
    if _EXIT_SILENCED:
        return
    _EXIT_SILENCED = True
    import atexit

    def _silence() -> None:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    atexit.register(_silence)
