"""Shared CLI plumbing: error mapping, output streams, quiet TensorFlow logs.

Imports nothing heavy: TensorFlow / Keras load only inside commands that train
or run a model.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import warnings
from typing import Any

import typer

from dlcli.errors import DlcliError, ExitCode

STATE = {"debug": False}


def stderr_console():
    from rich.console import Console

    # not a terminal (a CI log, a file): no width to wrap at, so a long path stays on one line
    return Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())


def stdout_console():
    """Tables on stdout; 120 columns when stdout is not a terminal (CI logs), so they stay readable."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


# packages whose UserWarnings name their own internals, not the user's model or data
_NOISY_MODULES = (r"tensorflow(\.|$)", r"tf2onnx(\.|$)", r"ai_edge_litert(\.|$)", r"onnxruntime(\.|$)",
                  r"google\.protobuf(\.|$)", r"absl(\.|$)")


def quiet_frameworks() -> None:
    """Keep TensorFlow's C++ and Python chatter off stderr unless --debug."""
    if STATE["debug"]:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    for module in _NOISY_MODULES:  # their UserWarnings are about their own internals; Keras's stay visible
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if "tensorflow" in sys.modules:
        return
    # TF's C++ start-up lines are printed before absl logging is initialised, so no
    # environment variable hides them: silence fd 2 for the import only.
    from dlcli.stdio import silenced_fd2

    with silenced_fd2():
        import tensorflow  # noqa: F401
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def native_quiet():
    """Silence what native code (TFLite converter, LiteRT, onnxruntime) prints on fd 2,
    unless --debug; yields a text stream on the real stderr for dlcli's own progress lines.
    Python-level errors still surface: they are raised, not printed."""
    if STATE["debug"]:
        yield sys.stderr
        return
    from dlcli.stdio import silence_fd2_at_exit, silenced_fd2

    sys.stderr.flush()
    silence_fd2_at_exit()  # and what native code prints while the process is torn down
    with os.fdopen(os.dup(2), "w", buffering=1) as log, silenced_fd2():  # log: the real stderr
        yield log


def emit_json(obj: Any) -> None:
    """Exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def fail(exc: DlcliError) -> None:
    print(f"error: {exc}", file=sys.stderr)
    raise typer.Exit(int(exc.exit_code))


def handle_errors(fn):
    """Map DlcliError to its one-line message and exit code; other errors to exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except DlcliError as exc:
            if STATE["debug"]:
                import traceback

                traceback.print_exc()
            fail(exc)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except Exception as exc:  # last line of defence
            if STATE["debug"]:
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            print(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
                  file=sys.stderr)
            raise typer.Exit(int(ExitCode.INTERNAL)) from None

    return wrapper


def progress_mode(quiet: bool, json_out: bool) -> str:
    if quiet:
        return "plain"
    return "rich" if sys.stderr.isatty() and not os.environ.get("CI") else "plain"
