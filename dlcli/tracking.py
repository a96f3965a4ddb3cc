"""Experiment tracking: MLflow runs logged from dlcli's own loop (``autolog`` only patches
``fit``, which dlcli does not call).

A run directory is the record; the tracker mirrors it. Every stage that trains opens a
:class:`Tracker` (a no-op unless the recipe says ``tracking.backend: mlflow``): parameters
when the run starts, metrics every epoch, the final metrics and files when it ends. The
MLflow run id is kept in ``env.json`` (``tracking``), so a resumed run continues the same
MLflow run and later commands (export, benchmark, report) add their files to it.

A tracker that cannot be reached is a warning: training goes on, nothing is lost, and
``dlcli track RUN`` logs the run directory later. ``tracking.required: true`` (or
``--require-tracking``) makes it an error (exit 11).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dlcli.errors import DlcliError, TrackingError, UsageError

PARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("dlcli_tracking_parent", default=None)
REQUIRE: contextvars.ContextVar[bool] = contextvars.ContextVar("dlcli_tracking_required", default=False)
MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
RUN_FILES = ("recipe.yaml", "metrics.json", "env.json", "history.csv", "preprocessing.json", "labels.txt",
             "sparsity.json", "pipeline.json")


@contextlib.contextmanager
def nested(run_id: str | None):
    """Runs opened inside become children of ``run_id`` (pipeline stages, tune trials)."""
    token = PARENT.set(run_id)
    try:
        yield
    finally:
        PARENT.reset(token)


class Tracker:
    """The no-op tracker: what a recipe without ``tracking:`` gets."""

    run_id: str | None = None

    def callback(self):
        return None

    def finish(self, run_dir: Path, status: str) -> None:
        pass


def resolve_uri(spec) -> str:
    uri = spec.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UsageError("tracking.backend is mlflow but no tracking URI is set: give tracking.uri in the recipe "
                         "or set MLFLOW_TRACKING_URI")
    return uri


def public_uri(uri: str) -> str:
    """The URI without user:password (env.json must not keep credentials)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def reachable(uri: str, timeout: float = 3.0) -> str | None:
    """None when an HTTP tracking server answers (any status), else why not. Other URIs
    (file:, sqlite:, databricks) are left to MLflow."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # http(s) only: checked above
            return None
    except urllib.error.HTTPError:
        return None  # something answered: a proxy or an older server without /health
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def _client(uri: str):
    # bounded retries: a tracker that goes away mid-run costs seconds, never the run
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout holds --json; dlcli logs the run
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise UsageError("tracking.backend mlflow needs the mlflow package: pip install 'dlcli[mlflow]'") from exc
    return MlflowClient(tracking_uri=uri)


def _experiment(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another process (a parallel tune worker) created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping as dotted keys -> text (lists of scalars stay one value)."""
    out: dict[str, str] = {}
    if isinstance(data, dict) and data:
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        text = json.dumps(data) if not isinstance(data, str) else data
        out[prefix.rstrip(".")] = text[:MAX_PARAM_CHARS]
    return out


class MlflowTracker(Tracker):
    """One MLflow run mirroring one run directory. A failed call warns once and turns the
    tracker off (``required``: raises TrackingError)."""

    def __init__(self, spec, uri: str, run_id: str, client, log, required: bool):
        self.spec, self.uri, self.run_id, self.client = spec, uri, run_id, client
        self.log, self.required, self.alive = log, required, True
        self.epochs_logged: set[int] = set()  # epochs this run already holds (history.csv fills the rest)

    def call(self, what: str, fn, *args, **kwargs):
        if not self.alive:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # any tracker failure (HTTP, store, MLflow) is reported, never fatal
            if self.required:
                raise TrackingError(f"tracking: {what} failed at {public_uri(self.uri)}: {_first_line(exc)}") from exc
            self.alive = False
            self.log(f"warning: tracking: {what} failed at {public_uri(self.uri)} ({_first_line(exc)}); "
                     "tracking is off for this run, training goes on (dlcli track RUN logs it later)")
            return None

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_metric_key(k), float(v), now, step) for k, v in values.items() if _finite(v)]
        if batch:
            self.call("logging metrics", self.client.log_batch, self.run_id, metrics=batch)

    def callback(self):
        import keras

        tracker = self

        class EpochMetrics(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                values = dict(logs or {})
                lr = getattr(self.model.optimizer, "learning_rate", None)
                if lr is not None:
                    values["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
                tracker.metrics(values, epoch + 1)
                tracker.epochs_logged.add(epoch + 1)

        return EpochMetrics()

    def finish(self, run_dir: Path, status: str) -> None:
        if status == "FINISHED":
            log_run_dir(self, run_dir)
        self.call("closing the run", self.client.set_terminated, self.run_id, status)

    def files(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for p in paths:
            if p.is_dir():
                self.call(f"logging {p.name}/", self.client.log_artifacts, self.run_id, str(p),
                          artifact_path=f"{artifact_path}/{p.name}" if artifact_path else p.name)
            elif p.is_file():
                self.call(f"logging {p.name}", self.client.log_artifact, self.run_id, str(p), artifact_path)


def _metric_key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _finite(v) -> bool:
    try:
        return abs(float(v)) != float("inf") and float(v) == float(v)
    except (TypeError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def precheck(recipe) -> None:
    """Before a run directory is touched: the URI is set, MLflow is installed and, when the
    tracker is required, the server answers."""
    spec = recipe.tracking
    if spec.backend != "mlflow":
        return
    uri = resolve_uri(spec)
    _client(uri)
    if spec.required or REQUIRE.get():
        why = reachable(uri)
        if why is not None:
            _unreachable(uri, why, True, None)


def start(recipe, run_dir: Path, env: dict, *, stage: str = "train", log=None) -> Tracker:
    """The tracker for a stage about to train into ``run_dir`` (chief only). ``env`` is the
    run's env.json: its ``tracking`` entry is continued (a resume) or written here."""
    spec = recipe.tracking
    if spec.backend != "mlflow":
        return Tracker()
    log = log or (lambda msg: None)
    required = spec.required or REQUIRE.get()
    uri = resolve_uri(spec)
    client = _client(uri)
    why = reachable(uri)
    if why is not None:
        _unreachable(uri, why, required, log)
        env["tracking"] = {"backend": "mlflow", "uri": public_uri(uri), "run_id": None, "status": "unreachable"}
        return Tracker()
    previous = (env.get("tracking") or {}).get("run_id")
    tracker = MlflowTracker(spec, uri, previous or "", client, log, required)
    if previous:  # a resume: the same MLflow run, and the epochs it already holds
        tracker.call("reopening the run", client.update_run, previous, status="RUNNING")
        held = tracker.call("reading the run", client.get_metric_history, previous, "loss") or []
        tracker.epochs_logged.update(m.step for m in held)
    else:
        run = tracker.call("starting a run", _create_run, client, spec, recipe, run_dir, stage)
        tracker.run_id = run.info.run_id if run is not None else None
        if tracker.run_id:
            tracker.call("logging parameters", _log_params, client, tracker.run_id, recipe, env)
    if not tracker.alive or not tracker.run_id:
        return Tracker()
    env["tracking"] = {"backend": "mlflow", "uri": public_uri(uri), "experiment": _experiment_name(spec, recipe),
                       "run_id": tracker.run_id}
    log(f"tracking: MLflow run {tracker.run_id} at {public_uri(uri)}")
    return tracker


def _unreachable(uri: str, why: str, required: bool, log) -> None:
    msg = f"tracking: the MLflow server at {public_uri(uri)} cannot be reached ({why})"
    if required:
        raise TrackingError(msg)
    log(f"warning: {msg}; going on without it (dlcli track RUN logs a completed run later)")


def _experiment_name(spec, recipe) -> str:
    return spec.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe.name


def _create_run(client, spec, recipe, run_dir: Path, stage: str):
    tags = {"dlcli.run_dir": str(Path(run_dir).resolve()), "dlcli.stage": stage, "dlcli.recipe": recipe.name,
            "mlflow.source.name": "dlcli", **spec.tags}
    parent = PARENT.get()
    if parent:
        tags["mlflow.parentRunId"] = parent
    return client.create_run(_experiment(client, _experiment_name(spec, recipe)), tags=tags,
                             run_name=spec.run_name or Path(run_dir).name)


def _log_params(client, run_id: str, recipe, env: dict) -> None:
    from mlflow.entities import Param

    params = flatten(recipe.model_dump(mode="json", exclude={"tracking", "tune"}))
    params["dlcli.stage"] = str(env.get("stage", "train"))
    params["dlcli.version"] = __import__("dlcli").__version__
    params["recipe_hash"] = str(env.get("recipe_hash", ""))
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per call
        client.log_batch(run_id, params=items[i:i + 100])


def log_run_dir(tracker: MlflowTracker, run_dir: Path) -> None:
    """What a finished run directory holds: the epochs not logged live (from history.csv),
    the final metrics per split, versions and data fingerprint as tags, and its files."""
    run_dir = Path(run_dir)
    _history(tracker, run_dir / "history.csv")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        env = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics, env = {}, {}
    final = {f"{split}_{k}": v for split, values in metrics.items() for k, v in values.items()}
    tracker.metrics(final, int(env.get("epochs_run", 0) or 0))
    from mlflow.entities import Param, RunTag

    # known once the data is read: parameters (the same value again on a resume is accepted)
    params = [Param(k, str(env[k])) for k in ("data_fingerprint", "tensorflow", "keras", "python") if env.get(k)]
    tags = [RunTag(f"dlcli.{k}", str(env[k])[:5000]) for k in ("weights_sha256", "status") if env.get(k)]
    if params or tags:
        tracker.call("logging the environment", tracker.client.log_batch, tracker.run_id, params=params, tags=tags)
    tracker.files([run_dir / name for name in RUN_FILES])
    if tracker.spec.log_model:
        tracker.files([run_dir / "model.keras"], "model")


def _history(tracker: MlflowTracker, path: Path) -> None:
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        epoch = int(float(row.pop("epoch", 0) or 0))
        if epoch not in tracker.epochs_logged:
            tracker.metrics({k: float(v) for k, v in row.items() if v not in ("", None)}, epoch)


def run_id_of(run_dir: Path) -> str | None:
    """The MLflow run recorded in ``run_dir``'s env.json, if any."""
    try:
        env = json.loads((Path(run_dir) / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (env.get("tracking") or {}).get("run_id")


def for_run(run_dir: Path, log=None) -> Tracker:
    """The tracker of a finished run directory (export, benchmark, report add their files
    to it): its recipe's ``tracking:`` and the MLflow run recorded in env.json."""
    run_id = run_id_of(run_dir)
    if not run_id:
        return Tracker()
    from dlcli.recipe.loader import load_recipe
    from dlcli.recipe.tune import TrackingSpec

    try:
        recipe = load_recipe(Path(run_dir) / "recipe.yaml")
    except DlcliError:
        return Tracker()
    spec = recipe.tracking
    env = json.loads((Path(run_dir) / "env.json").read_text(encoding="utf-8"))
    recorded = (env.get("tracking") or {}).get("uri")
    if spec.backend != "mlflow":  # logged afterwards by dlcli track
        spec = TrackingSpec(backend="mlflow")
    if not spec.log_artifacts:
        return Tracker()
    log = log or (lambda msg: None)
    uri = spec.uri or os.environ.get("MLFLOW_TRACKING_URI") or recorded  # where the run was logged
    if not uri:
        return Tracker()
    why = reachable(uri)
    if why is not None:
        _unreachable(uri, why, spec.required or REQUIRE.get(), log)
        return Tracker()
    return MlflowTracker(spec, uri, run_id, _client(uri), log, spec.required or REQUIRE.get())


def log_files(run_dir: Path, paths: list[Path], artifact_path: str | None = None, log=None) -> None:
    """Add ``paths`` to the MLflow run of ``run_dir`` (nothing when it has none)."""
    tracker = for_run(run_dir, log)
    if isinstance(tracker, MlflowTracker):
        tracker.files(paths, artifact_path)


def track_run(run_dir: Path, *, uri: str | None = None, experiment: str | None = None, log=None) -> str:
    """Log a finished run directory that no tracker saw (the server was down, or the recipe
    had no ``tracking:``): parameters, every epoch from history.csv, final metrics and files.
    Returns the MLflow run id (the one already recorded, when there is one)."""
    from dlcli.atomic import write_json
    from dlcli.recipe.loader import load_recipe
    from dlcli.rundir import RUN_MARKERS

    run_dir = Path(run_dir)
    if not any((run_dir / m).exists() for m in RUN_MARKERS):
        from dlcli.errors import RunDirError

        raise RunDirError(f"{run_dir}: not a dlcli run (no recipe.yaml or env.json)")
    env = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
    if env.get("status") != "completed":
        raise UsageError(f"{run_dir}: the run is {env.get('status', 'unfinished')}; track logs completed runs "
                         "(an unfinished run is logged live when it resumes)")
    recorded = (env.get("tracking") or {}).get("run_id")
    if recorded:
        return recorded
    recipe = load_recipe(run_dir / "recipe.yaml")
    update = {"backend": "mlflow", **({"uri": uri} if uri else {}), **({"experiment": experiment} if experiment else {})}
    recipe.tracking = recipe.tracking.model_copy(update=update)
    token = REQUIRE.set(True)
    try:
        tracker = start(recipe, run_dir, env, stage=str(env.get("stage", "train")), log=log)
        for sub in ("export", "benchmark.json", "report.html", "report_files"):
            if (run_dir / sub).exists() and recipe.tracking.log_artifacts:
                tracker.files([run_dir / sub], "report" if sub.startswith("report") else None)
        tracker.finish(run_dir, "FINISHED")
    finally:
        REQUIRE.reset(token)
    write_json(run_dir / "env.json", env)
    return env["tracking"]["run_id"]
