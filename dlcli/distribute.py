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

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


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
    except (ValueError, AttributeError):
        raise UsageError("TF_CONFIG: not valid JSON (expected {\"cluster\": {...}, \"task\": {...}})") from None
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


def split_cpu(n: int) -> None:
    """Split the CPU into ``n`` logical devices (before TensorFlow initialises its runtime)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        raise UsageError("train.cpu_devices: TensorFlow is already initialised in this process; "
                         "split the CPU in a fresh process") from None


def make_strategy(name: str, tpu: str | None = None):
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
            raise UsageError(f"train.strategy tpu: no TPU reachable{where}: {str(exc).splitlines()[0][:160]}") from None
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        raise UsageError(
            "train.strategy multi_worker is not available yet: Keras 3 model.fit fails under "
            "MultiWorkerMirroredStrategy (keras-team/keras#20585); dlcli's own multi-worker loop is planned")
    raise UsageError(f"unknown strategy {name!r}")  # pragma: no cover
