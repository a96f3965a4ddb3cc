"""tf.distribute strategies: which one to use, and building it.

``resolve(requested, ...)`` is pure logic (no TensorFlow import) so it is testable
anywhere; ``make_strategy`` builds the strategy. ``auto`` picks:

1. ``tpu`` when a TPU is configured (``train.tpu`` in the recipe, or ``TPU_NAME`` /
   ``COLAB_TPU_ADDR`` in the environment);
2. ``multi_worker`` when ``TF_CONFIG`` describes more than one worker, or a SLURM
   allocation has more than one task;
3. ``mirrored`` when more than one GPU is visible;
4. ``default`` otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dlcli.errors import UsageError
from dlcli.recipe.base import literal_values
from dlcli.recipe.train import TrainSpec

STRATEGIES = literal_values(TrainSpec, "strategy")  # the schema's list: one place to add a strategy


@dataclass(frozen=True)
class Resolution:
    name: str
    reason: str


def tf_config_workers(env: Mapping[str, str]) -> int:
    """Number of workers (chief included) that TF_CONFIG describes; 0 when unset."""
    raw = env.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (ValueError, AttributeError) as exc:
        raise UsageError("TF_CONFIG: not valid JSON (expected {\"cluster\": {...}, \"task\": {...}})") from exc
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def slurm_tasks(env: Mapping[str, str]) -> int:
    for key in ("SLURM_NTASKS", "SLURM_NPROCS"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return 0


def resolve(requested: str, env: Mapping[str, str] | None = None, gpus: int = 0,
            tpu: str | None = None) -> Resolution:
    env = os.environ if env is None else env
    if requested not in STRATEGIES:
        raise UsageError(f"--strategy {requested!r}: expected one of {', '.join(STRATEGIES)}")
    if requested != "auto":
        return Resolution(requested, "requested")
    tpu_address = tpu or env.get("TPU_NAME") or env.get("COLAB_TPU_ADDR")
    if tpu_address:
        return Resolution("tpu", f"a TPU is configured ({tpu_address})")
    workers = tf_config_workers(env)
    if workers > 1:
        return Resolution("multi_worker", f"TF_CONFIG describes {workers} workers")
    tasks = slurm_tasks(env)
    if tasks > 1:
        return Resolution("multi_worker", f"SLURM allocation with {tasks} tasks")
    if gpus > 1:
        return Resolution("mirrored", f"{gpus} GPUs visible")
    return Resolution("default", "one device" if gpus <= 1 else "")


@dataclass(frozen=True)
class Role:
    """This process's place in a multi-worker cluster."""

    task_type: str
    task_id: int
    workers: int

    has_chief: bool = False  # the cluster has a "chief" task (else worker 0 is the chief)

    @property
    def chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_id == 0 and not self.has_chief)


def cluster_role(env: Mapping[str, str] | None = None) -> Role:
    """Which task this process is, from TF_CONFIG or SLURM (pure: no TensorFlow import).

    The chief is the ``chief`` task, or worker 0 when the cluster has no chief (as in
    TensorFlow's own convention); under SLURM, the task with ``SLURM_PROCID`` 0.
    """
    env = os.environ if env is None else env
    if env.get("TF_CONFIG"):
        tf_config_workers(env)  # a one-line UsageError for JSON that does not parse
        cfg = json.loads(env["TF_CONFIG"])
        task = cfg.get("task") or {}
        cluster = cfg.get("cluster") or {}
        if "type" not in task or "index" not in task:
            raise UsageError('TF_CONFIG: "task" needs "type" and "index" (e.g. {"type": "worker", "index": 0})')
        return Role(str(task["type"]), int(task["index"]), tf_config_workers(env), "chief" in cluster)
    if slurm_tasks(env) > 1:
        return Role("worker", int(env.get("SLURM_PROCID", "0") or 0), slurm_tasks(env))
    raise UsageError("train.strategy multi_worker: no cluster described; set TF_CONFIG on every worker "
                     "(docs/distributed.md) or run under SLURM with several tasks")


def split_cpu(n: int) -> None:
    """Split the CPU into ``n`` logical devices (before TensorFlow initialises its runtime)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    if len(tf.config.get_logical_device_configuration(cpus[0]) or []) == n:
        return  # a later stage of the same process: already split this way
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        raise UsageError("train.cpu_devices: TensorFlow is already initialised in this process; "
                         "split the CPU in a fresh process") from exc


_JOINED: dict = {}  # multi-worker and TPU configure the runtime once per process: later stages reuse them


def make_strategy(name: str, tpu: str | None = None, worker_timeout: float | None = None):
    if name in ("multi_worker", "tpu"):
        key = (name, tpu, worker_timeout)
        if key not in _JOINED:
            _JOINED[key] = _new_strategy(name, tpu, worker_timeout)
        return _JOINED[key]
    return _new_strategy(name, tpu, worker_timeout)


def _new_strategy(name: str, tpu: str | None, worker_timeout: float | None):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            where = f" at {tpu!r}" if tpu else " (set train.tpu or TPU_NAME)"
            raise UsageError(f"train.strategy tpu: no TPU reachable{where}: {str(exc).splitlines()[0][:160]}") from exc
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        # TF_CONFIG when set (TFConfigClusterResolver, the default), else SLURM's allocation
        resolver = None
        if not os.environ.get("TF_CONFIG"):
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=worker_timeout)
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            raise UsageError(f"train.strategy multi_worker: cannot join the cluster: {str(exc).splitlines()[0][:200]}") \
                from exc
    raise UsageError(f"unknown strategy {name!r}")  # pragma: no cover
