"""Multi-worker training: two worker processes on localhost (TF_CONFIG), as on two machines.

Keras 3 ``model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585);
dlcli's own loop runs Keras's train_step through the strategy. These tests start real
processes that all-reduce over gRPC on localhost.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlcli.train import resume as ckpt

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RECIPE = """
name: mw
seed: 11
data: {{source: synthetic, samples: {n}, shape: [8], num_classes: 3, noise: 0.6, split: {{test: 0.2}}}}
model: {{architecture: mlp, units: [32]}}  # no dropout: each replica would draw its own masks
train:
  epochs: {epochs}
  batch_size: 32
  optimizer: {{name: adam, learning_rate: 0.005}}
  worker_timeout_seconds: 30
  callbacks: {{tensorboard: false, checkpoint: {{min_interval_seconds: {interval}}}}}
"""


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(recipe: Path, run_dirs: list[Path], *extra: str) -> list[subprocess.Popen]:
    ports = _ports(len(run_dirs))
    procs = []
    for i, run_dir in enumerate(run_dirs):
        tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dlcli", "train", str(recipe), "--run-dir", str(run_dir), "--json", "--quiet", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


def _results(procs) -> list[dict]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout))
    return out


def _recipe(tmp_path: Path, n: int = 640, epochs: int = 4, interval: float = 0) -> Path:
    path = tmp_path / "mw.yaml"
    path.write_text(RECIPE.format(n=n, epochs=epochs, interval=interval))
    return path


def test_two_workers_train_together_and_only_the_chief_writes(tmp_path):
    recipe = _recipe(tmp_path)
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    procs = _start(recipe, [chief_dir, worker_dir])
    chief, worker = _results(procs)
    assert chief["chief"] is True and worker["chief"] is False
    # the same weights on both workers (every step all-reduced the gradients)
    assert chief["weights_sha256"] == worker["weights_sha256"]
    # the loss falls
    with open(chief_dir / "history.csv") as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh)]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    # metrics are reduced over both workers: both report the same
    assert chief["metrics"] == worker["metrics"]
    # the run directory is written once, by the chief; the other worker writes nothing
    assert not worker_dir.exists()
    env = json.loads((chief_dir / "env.json").read_text())
    assert env["status"] == "completed" and env["pid"] == procs[0].pid
    assert env["strategy"]["name"] == "multi_worker" and env["strategy"]["workers"] == 2
    assert env["strategy"]["replicas"] == 2 and env["strategy"]["task"] == "worker:0"
    for name in ("model.keras", "metrics.json", "history.csv", "checkpoints/last.keras", "recipe.yaml"):
        assert (chief_dir / name).exists(), name
    # the same recipe in one process: two workers split each global batch and all-reduce,
    # so the result is the single-process one up to float summation order
    single = subprocess.run([sys.executable, "-m", "dlcli", "train", str(recipe), "--run-dir", str(tmp_path / "one"),
                             "--json", "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert single.returncode == 0, single.stderr
    one = json.loads(single.stdout)["metrics"]
    for split in one:
        assert chief["metrics"][split]["loss"] == pytest.approx(one[split]["loss"], rel=1e-4)
        assert chief["metrics"][split]["accuracy"] == pytest.approx(one[split]["accuracy"], abs=1e-6)


def test_a_dead_worker_stops_the_other_then_all_resume(tmp_path):
    recipe = _recipe(tmp_path, n=6000, epochs=3, interval=0.5)
    run_dir = tmp_path / "run"  # shared by both, as on shared storage
    procs = _start(recipe, [run_dir, run_dir])
    deadline = time.time() + 180
    while time.time() < deadline:  # until the chief has written a checkpoint
        if ckpt.latest(run_dir / "checkpoints") is not None:
            break
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        time.sleep(0.05)
    assert ckpt.latest(run_dir / "checkpoints") is not None
    killed = time.monotonic()
    procs[1].send_signal(signal.SIGKILL)
    _, err = procs[0].communicate(timeout=120)
    waited = time.monotonic() - killed
    procs[1].wait(timeout=30)
    assert procs[0].returncode == 9, err[-3000:]
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "stopped responding" in line[0] and "--resume" in line[0] and "Traceback" not in err
    assert waited < 60  # bounded: here the peer's socket closes at once; a silent peer waits worker_timeout_seconds
    env = json.loads((run_dir / "env.json").read_text())
    assert env["status"] == "failed"
    at = ckpt.latest(run_dir / "checkpoints")
    # restart every worker with --resume: they continue from the chief's last checkpoint
    chief, worker = _results(_start(recipe, [run_dir, run_dir], "--resume"))
    assert chief["weights_sha256"] == worker["weights_sha256"]
    assert chief["epochs"] == 3
    env = json.loads((run_dir / "env.json").read_text())
    assert env["status"] == "completed" and env["resumed"][-1] == {**env["resumed"][-1], "epoch": at.epoch + 1,
                                                                  "step": at.step}


def test_every_worker_trains_every_stage_and_only_the_chief_writes(tmp_path):
    """A recipe with compress: both workers train, then prune together (the prune stage
    reads the chief's model from the shared run directory after a barrier); only the
    chief writes, summarises and exports."""
    recipe = _recipe(tmp_path, n=320, epochs=2)
    recipe.write_text(recipe.read_text() + "compress: {prune: {sparsity: 0.5, epochs: 2}}\n"
                      "export: {formats: [tflite]}\n")
    run = tmp_path / "run"  # shared storage: both workers name the same run directory
    procs = _start(recipe, [run, run])
    chief, worker = _results(procs)
    assert chief["chief"] and not worker["chief"]
    assert chief["pipeline"]["weights"]["prune"] == worker["pipeline"]["weights"]["prune"]
    assert [s["name"] for s in chief["pipeline"]["stages"]] == ["train", "prune"]
    assert worker["pipeline"]["stages"] == [] and "export" not in worker["pipeline"]
    env = json.loads((run / "pruned" / "env.json").read_text())
    assert env["status"] == "completed" and env["pid"] == procs[0].pid
    assert env["strategy"]["name"] == "multi_worker" and env["strategy"]["workers"] == 2
    assert chief["pipeline"]["export"]["passed"]


def test_each_worker_decodes_only_its_own_shard_of_a_streamed_folder(tmp_path, monkeypatch):
    """A streamed image folder: each worker reads a disjoint shard of the keys every epoch,
    together the whole training split, and the shards change from epoch to epoch."""
    from test_streaming import _folder, _recipe

    _folder(tmp_path / "img")  # 48 images: 36 train (3 global batches of 12), 12 validation
    recipe = _recipe(tmp_path, "none").read_text().replace("batch_size: 8", "batch_size: 12")
    # no batch norm: its moving statistics are each worker's own (Keras 3 under
    # MultiWorkerMirroredStrategy), so weights would differ in them, not in what is trained
    recipe = recipe.replace("dense: [8]}", "dense: [8], normalization: none}")
    (tmp_path / "r.yaml").write_text(recipe)
    monkeypatch.setenv("DLCLI_DATA_TRACE", str(tmp_path / "trace"))
    procs = _start(tmp_path / "r.yaml", [tmp_path / "run", tmp_path / "run"])
    chief, worker = _results(procs)
    assert chief["weights_sha256"] == worker["weights_sha256"]
    seen = [(tmp_path / f"trace.{w}").read_text().split() for w in (0, 1)]
    assert [len(s) for s in seen] == [36, 36]  # 2 epochs x 18 examples, each decoded once
    from dlcli.data import load_data
    from dlcli.recipe.loader import load_recipe

    train_keys = set(load_data(load_recipe(tmp_path / "r.yaml")).splits["train"].keys)
    epochs = [[set(s[e * 18:(e + 1) * 18]) for s in seen] for e in (0, 1)]
    for first, second in epochs:
        assert not first & second and first | second == train_keys
    assert epochs[0][0] != epochs[1][0]



def test_each_worker_reads_only_its_own_rows_of_a_streamed_csv(tmp_path, monkeypatch):
    """A CSV streamed row by row: every epoch, the workers' rows are disjoint and together the
    training split; which worker reads which rows turns from epoch to epoch."""
    from test_streaming_rows import _csv, _recipe

    from dlcli.data import load_data
    from dlcli.recipe.loader import load_recipe

    _csv(tmp_path / "d.csv.gz")  # 160 rows: 128 train (8 global batches of 16), 32 validation
    _recipe(tmp_path, "none")
    monkeypatch.setenv("DLCLI_DATA_TRACE", str(tmp_path / "trace"))
    chief, worker = _results(_start(tmp_path / "r.yaml", [tmp_path / "run", tmp_path / "run"]))
    assert chief["weights_sha256"] == worker["weights_sha256"]
    members = {int(r) for r in load_data(load_recipe(tmp_path / "r.yaml")).splits["train"].members}
    seen: dict[str, list[set[int]]] = {}
    for w in (0, 1):  # "seed row" lines; a read-ahead may repeat rows of the same epoch
        for line in (tmp_path / f"trace.{w}").read_text().splitlines():
            seed, row = line.split()
            seen.setdefault(seed, [set(), set()])[w].add(int(row))
    assert len(seen) == 2  # two epochs
    for first, second in seen.values():
        assert len(first) == len(second) == 64 and not first & second and first | second == members
    assert next(iter(seen.values()))[0] != list(seen.values())[1][0]


def test_an_undecodable_image_stops_every_worker_with_exit_3(tmp_path):
    """A corrupt file met mid-stream by one worker must not leave the other hanging."""
    from test_streaming import _folder, _recipe

    _folder(tmp_path / "img")
    bad = tmp_path / "img" / "light" / "017.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    recipe = _recipe(tmp_path, "none").read_text().replace("batch_size: 8", "batch_size: 12")
    (tmp_path / "r.yaml").write_text(recipe)
    procs = _start(tmp_path / "r.yaml", [tmp_path / "run", tmp_path / "run"])
    results = [(p.communicate(timeout=300)[1], p.returncode) for p in procs]
    # the worker that decodes it names it (exit 3); a peer stops too, with 3 or "worker lost" (9)
    assert any(code == 3 and str(bad) in err for err, code in results), results
    for err, code in results:
        assert code in (3, 9) and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "run" / "model.keras").exists()
