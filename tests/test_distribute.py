"""Strategies: the auto rule, mirrored on two logical CPUs, TPU / multi-worker errors,
and SIGTERM -> checkpoint + exit code 130."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dlcli.distribute import resolve, tf_config_workers
from dlcli.errors import UsageError

TF_CONFIG_2 = json.dumps({"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                          "task": {"type": "worker", "index": 0}})


@pytest.mark.parametrize("requested,env,gpus,tpu,expected", [
    ("auto", {}, 0, None, "default"),
    ("auto", {}, 1, None, "default"),
    ("auto", {}, 2, None, "mirrored"),
    ("auto", {"TF_CONFIG": TF_CONFIG_2}, 2, None, "multi_worker"),
    ("auto", {"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}, "task": {}})}, 0, None, "default"),
    ("auto", {"SLURM_NTASKS": "4"}, 0, None, "multi_worker"),
    ("auto", {"SLURM_NTASKS": "1"}, 0, None, "default"),
    ("auto", {"TPU_NAME": "my-tpu", "TF_CONFIG": TF_CONFIG_2}, 8, None, "tpu"),
    ("auto", {}, 0, "grpc://10.0.0.2:8470", "tpu"),
    ("mirrored", {"TPU_NAME": "x"}, 0, None, "mirrored"),
    ("one_device", {}, 4, None, "one_device"),
])
def test_auto_resolution(requested, env, gpus, tpu, expected):
    assert resolve(requested, env, gpus, tpu).name == expected


def test_resolution_errors():
    with pytest.raises(UsageError, match="TF_CONFIG"):
        tf_config_workers({"TF_CONFIG": "{not json"})
    with pytest.raises(UsageError, match="expected one of"):
        resolve("horovod", {})


RECIPE = """
name: dist
seed: 3
data: {{source: synthetic, samples: {n}, shape: [8], num_classes: 3, noise: 0.4, split: {{test: 0.2}}}}
model: {{architecture: mlp, units: [16]}}
train: {{epochs: {epochs}, batch_size: 32, optimizer: {{name: sgd, learning_rate: 0.05}},
        callbacks: {{tensorboard: false}}}}
"""


def _train(tmp_path, name, *sets, n=320, epochs=3):
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(RECIPE.format(n=n, epochs=epochs))
    cmd = [sys.executable, "-m", "dlcli", "train", str(recipe), "--run-dir", str(tmp_path / name), "--json", "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.distributed
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    """Two replicas each take half of the global batch and the gradients are summed, so a
    step is the one-device step up to float summation order. Each epoch's shuffle order is
    a function of (seed, epoch) under every strategy, so shuffling changes nothing: stated
    tolerance 1e-5 absolute without shuffling, 1e-4 relative on the loss and one example
    of accuracy with it."""
    runs = {}
    for name, sets in (("one", ["train.strategy=default"]),
                       ("two", ["train.strategy=mirrored", "train.cpu_devices=2"])):
        for shuffle in (0, 10000):
            r = _train(tmp_path, f"{name}{shuffle}", *sets, f"data.pipeline.shuffle_buffer={shuffle}")
            assert r.returncode == 0, r.stderr
            runs[name, shuffle] = json.loads(r.stdout)["metrics"]
    env = json.loads((tmp_path / "two0" / "env.json").read_text())
    assert env["strategy"] == {"name": "mirrored", "reason": "requested", "replicas": 2}
    a, b = runs["one", 0], runs["two", 0]
    for split in a:
        for k in a[split]:
            assert b[split][k] == pytest.approx(a[split][k], abs=1e-5), (split, k)
    a, b = runs["one", 10000], runs["two", 10000]
    for split in a:
        assert b[split]["loss"] == pytest.approx(a[split]["loss"], rel=1e-4)
        assert b[split]["accuracy"] == pytest.approx(a[split]["accuracy"], abs=1 / 64)


@pytest.mark.slow  # starts processes: ~15 s
def test_multi_worker_without_a_cluster_and_missing_tpu_are_clear_errors(tmp_path):
    r = _train(tmp_path, "mw", "train.strategy=multi_worker", epochs=1)
    assert r.returncode == 2 and "TF_CONFIG" in r.stderr and "Traceback" not in r.stderr
    r = _train(tmp_path, "tpu", "train.strategy=tpu", epochs=1)  # no TPU name or address here
    assert r.returncode == 2 and "no TPU reachable" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("tf_config,expected", [
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, ("worker", 0, 2, True)),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, ("worker", 1, 2, False)),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, ("worker", 0, 2, False)),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, ("chief", 0, 2, True)),
])
def test_cluster_role_names_the_chief(tf_config, expected):
    from dlcli.distribute import cluster_role

    role = cluster_role({"TF_CONFIG": json.dumps(tf_config)})
    assert (role.task_type, role.task_id, role.workers, role.chief) == expected


def test_cluster_role_from_slurm_and_errors():
    from dlcli.distribute import cluster_role

    assert cluster_role({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}).chief is False
    assert cluster_role({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}).chief is True
    with pytest.raises(UsageError, match="no cluster"):
        cluster_role({})
    with pytest.raises(UsageError, match="not valid JSON"):
        cluster_role({"TF_CONFIG": "{oops"})
    with pytest.raises(UsageError, match='"task" needs'):
        cluster_role({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]}})})
