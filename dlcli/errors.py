"""One exception hierarchy, mapped in one place to a message and an exit code.

Every error a user can cause derives from :class:`DlcliError`. The CLI catches
it, prints ``error: <message>`` on one line and exits with ``exit_code``. Any
other exception is a bug: exit code 1, traceback only with ``--debug``.
The table is documented in docs/cli.md; a test keeps the two in step.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug in dlcli or an unexpected library failure
    USAGE = 2  # invalid recipe, bad command-line usage, bad model description
    DATA = 3  # missing or malformed data, data / model shape mismatch
    DIVERGED = 4  # training produced NaN or inf loss
    RUN_DIR = 5  # run directory exists, is not writable, is not a dlcli run, or cannot be resumed
    PARITY = 6  # an export failed its parity gate (reserved for export)
    THRESHOLD = 7  # a benchmark threshold was missed (reserved for benchmark)
    PACKAGE = 8  # a deployment package failed verification (changed, missing, extra or unsafe entries)
    WORKER_LOST = 9  # a multi-worker run lost a worker; every worker stopped (restart all with --resume)
    TARGET = 10  # the target runtime cannot run the model (pre-flight, native benchmark)
    STORE = 11  # an outside store cannot be used: the tracking server (when required), the tune study database
    INTERRUPTED = 130  # stopped by SIGINT / SIGTERM after writing a checkpoint


class DlcliError(Exception):
    """Base class of every error a user can cause."""

    exit_code: ExitCode = ExitCode.INTERNAL
    kind: str = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split("\n"))


class UsageError(DlcliError):
    exit_code = ExitCode.USAGE
    kind = "usage error"


class RecipeError(DlcliError):
    """The recipe file cannot be read, parsed or validated."""

    exit_code = ExitCode.USAGE
    kind = "recipe error"


class ModelError(DlcliError):
    """The model description cannot be turned into a Keras model."""

    exit_code = ExitCode.USAGE
    kind = "model error"


class DataError(DlcliError):
    """Data is missing, malformed, empty, or does not fit the model."""

    exit_code = ExitCode.DATA
    kind = "data error"


class ThresholdError(DlcliError):
    """A benchmark missed a --fail-under / --max-latency-ms threshold."""

    exit_code = ExitCode.THRESHOLD
    kind = "threshold missed"


class ShapeMismatchError(DataError):
    kind = "shape mismatch"


class TrainingDivergedError(DlcliError):
    exit_code = ExitCode.DIVERGED
    kind = "training diverged"


class ParityError(DlcliError):
    """An exported artifact failed its parity gate, or its conversion produced nothing."""

    exit_code = ExitCode.PARITY
    kind = "parity gate failed"


class PackageError(DlcliError):
    """A deployment package is unreadable or fails verification: a checksum differs, a file
    is missing or extra, or an entry is unsafe (absolute, ``..``, a link)."""

    exit_code = ExitCode.PACKAGE
    kind = "package error"


class EnvironmentProblemError(DlcliError):
    """``dlcli doctor`` found a known-bad combination of libraries or settings."""

    exit_code = ExitCode.USAGE
    kind = "environment problem"


class WorkerLostError(DlcliError):
    """A multi-worker run lost a peer (it died, or stopped answering within the timeout)."""

    exit_code = ExitCode.WORKER_LOST
    kind = "worker lost"


class TrainingInterrupted(DlcliError):
    """SIGTERM / SIGINT: the current step finished, a checkpoint was written."""

    exit_code = ExitCode.INTERRUPTED
    kind = "interrupted"


class TrackingError(DlcliError):
    """An outside store cannot be used: a required tracking server, the tune study database."""

    exit_code = ExitCode.STORE
    kind = "store error"


class TargetError(DlcliError):
    """The target runtime cannot run the model, or cannot time it itself."""

    exit_code = ExitCode.TARGET
    kind = "target error"


class RunDirError(DlcliError):
    exit_code = ExitCode.RUN_DIR
    kind = "run directory error"


class OutputError(RunDirError):
    """A file dlcli writes cannot be written there: a folder in the way, a missing or
    read-only place, a full disk."""

    kind = "output error"


EXIT_CODE_DOCS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.INTERNAL: "internal error (a bug: rerun with --debug and report the traceback)",
    ExitCode.USAGE: "invalid recipe, model description or command-line usage",
    ExitCode.DATA: "data error: missing or malformed file, empty split, labels out of range, "
    "data / model shape mismatch",
    ExitCode.DIVERGED: "training diverged (NaN or inf loss); the last good checkpoint is kept",
    ExitCode.RUN_DIR: "run directory or output error: exists (use --overwrite), not writable (a folder in the "
    "way, a read-only place, a full disk), "
    "not a dlcli run, or holds a run that cannot be resumed (another recipe, changed data, still running)",
    ExitCode.PARITY: "an exported artifact failed its parity gate or its conversion; "
    "the artifact is kept and marked failed in manifest.json",
    ExitCode.THRESHOLD: "a benchmark threshold was missed (--fail-under, --max-latency-ms)",
    ExitCode.PACKAGE: "package verification failed: a checksum differs, a file is missing or extra, "
    "or an entry is unsafe (absolute path, '..', a link)",
    ExitCode.WORKER_LOST: "a multi-worker run lost a worker (it died or stopped answering within "
    "train.worker_timeout_seconds); every worker stopped: restart them all with --resume",
    ExitCode.TARGET: "the target runtime cannot run the model: the pre-flight found ops or sizes the target "
    "cannot take (validate --target), or LiteRT / onnxruntime failed to run or time an artifact natively (benchmark)",
    ExitCode.STORE: "an outside store cannot be used: the MLflow tracking server is unreachable or fails while "
    "`tracking.required` / `--require-tracking` is set, or the tune study database is locked, corrupt or from "
    "another recipe",
    ExitCode.INTERRUPTED: "interrupted by SIGINT or SIGTERM: the current step finished and a checkpoint "
    "was written; continue with --resume",
}


# programming errors: raised in dlcli's own code, they are bugs, whatever the library call around them
BUG_TYPES = (AssertionError, AttributeError, IndexError, KeyError, NameError, TypeError, UnboundLocalError)
_PACKAGE = Path(__file__).resolve().parent


def is_dlcli_bug(exc: BaseException) -> bool:
    """Whether ``exc`` is a programming error raised in dlcli's own code (the innermost frame
    of its traceback is in the ``dlcli`` package), as opposed to a library refusing the
    user's model or data."""
    if not isinstance(exc, BUG_TYPES):
        return False
    tb, where = exc.__traceback__, None
    while tb is not None:
        where, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    return where is not None and Path(where).resolve().is_relative_to(_PACKAGE)


def raise_if_bug(exc: BaseException) -> None:
    """In a broad ``except`` that translates a library's failure into a user error (or records
    it on an artifact): let a dlcli bug through to the top-level mapper (exit 1, its traceback
    with --debug) instead of disguising it as the user's fault."""
    if is_dlcli_bug(exc):
        raise exc
