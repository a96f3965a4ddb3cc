"""Resume: SIGKILL mid-epoch, a kill while a checkpoint is being written, SIGTERM, and
the refusals (another recipe, a finished run, a live one). A resumed run ends with
exactly the weights of an uninterrupted run: each epoch's batches are a function of
(seed, epoch) and every variable, dropout seed states included, is restored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import sigkill_after_mid_epoch_checkpoint

from dlcli.train import resume as ckpt

# dropout, a cosine schedule, early stopping and Adam: all of their state must survive;
# checkpoints every 0.3 s, so several are written within each epoch (one step per
# execution keeps an epoch long enough for that; test_one_trainer.py checks that the
# number of steps per execution changes no result)
RECIPE = """
name: resume
seed: 5
data: {source: synthetic, samples: 6000, shape: [16], num_classes: 3, noise: 2.5, split: {test: 0.2}}
model: {architecture: mlp, units: [64, 32], dropout: 0.2}
train:
  epochs: 4
  batch_size: 16
  steps_per_execution: 1
  optimizer: {name: adam, learning_rate: {schedule: cosine, initial: 0.01}}
  callbacks: {tensorboard: false, early_stopping: {patience: 10}, checkpoint: {min_interval_seconds: 0.3}}
"""

# stops the process with SIGKILL at one instant of the N-th checkpoint write
KILLER = """
import os, signal, sys
import numpy as np
import dlcli.train.resume as R

point, nth = sys.argv[1], int(sys.argv[2])
sys.argv = [sys.argv[0], *sys.argv[3:]]
calls = {"n": 0}

def arm(name, fn):
    def wrapped(*args, **kwargs):
        if point == name:
            calls["n"] += 1
            if calls["n"] == nth:
                if name == "npz":  # leave a half-written file behind
                    args[0].write(b"PK\\x03\\x04 half")
                    args[0].flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped

R.np.savez = arm("npz", np.savez)              # while arrays.npz is being written
R._fsync_file = arm("fsync", R._fsync_file)    # every file written, nothing renamed yet
R._link_last = arm("renamed", R._link_last)    # renamed, the previous one not yet deleted
from dlcli.cli.main import run
run()
"""


def _cmd(recipe: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dlcli", "train", str(recipe), "--run-dir", str(run_dir), "--json", "--quiet", *extra]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "resume.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory) -> dict:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    r = subprocess.run(_cmd(recipe, run_dir), capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _finish(recipe: Path, run_dir: Path, *extra: str) -> tuple[dict, str]:
    r = subprocess.run(_cmd(recipe, run_dir, *extra), capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def _same_as(result: dict, reference: dict) -> None:
    assert result["weights_sha256"] == reference["weights_sha256"]
    assert result["metrics"] == reference["metrics"]
    assert result["epochs"] == reference["epochs"] == 4


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(recipe, reference, tmp_path):
    run_dir = tmp_path / "run"
    killed_at = sigkill_after_mid_epoch_checkpoint(_cmd(recipe, run_dir), run_dir)
    assert json.loads((run_dir / "env.json").read_text())["status"] == "running"  # it never got to say otherwise
    # no --resume: a killed run of the same recipe in --run-dir is continued automatically
    result, err = _finish(recipe, run_dir)
    assert f"resuming {run_dir} at epoch {killed_at.epoch + 1}, step {killed_at.step}" in err
    _same_as(result, reference)
    env = json.loads((run_dir / "env.json").read_text())
    assert env["status"] == "completed" and env["resumed"][0]["step"] == killed_at.step
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4 and history[0].startswith("epoch,")


@pytest.mark.slow
@pytest.mark.parametrize("point,nth", [("npz", 3), ("fsync", 7), ("renamed", 3)])  # the 3rd write (3 fsyncs each)
def test_kill_while_a_checkpoint_is_written_still_resumes(recipe, reference, tmp_path, point, nth):
    run_dir = tmp_path / "run"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    r = subprocess.run([sys.executable, str(killer), point, str(nth), "train", str(recipe), "--run-dir", str(run_dir),
                        "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    root = run_dir / "checkpoints" / ckpt.RESUME
    names = sorted(p.name for p in root.iterdir())
    if point == "renamed":  # the new one is in place and the previous one is still there
        assert len(ckpt.complete(run_dir / "checkpoints")) == 2
    else:  # a partial folder beside the last complete one
        assert any(".tmp-" in n for n in names) and len(ckpt.complete(run_dir / "checkpoints")) == 1, names
    result, _ = _finish(recipe, run_dir, "--resume")
    _same_as(result, reference)
    assert not any(".tmp-" in p.name for p in root.iterdir())  # the leftovers were cleared
    assert len(ckpt.complete(run_dir / "checkpoints")) == 1


@pytest.mark.slow
def test_sigterm_exits_130_with_a_checkpoint_and_resume_completes(recipe, reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cmd(recipe, run_dir)[:-2] + ["--quiet"], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # the first epoch line: training is under way
    deadline = time.time() + 120
    while not line.startswith("epoch") and time.time() < deadline:
        line = proc.stderr.readline()
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM" in err and "last.keras" in err and "--resume" in err
    env = json.loads((run_dir / "env.json").read_text())
    assert env["status"] == "interrupted" and env["interrupted"]["signal"] == "SIGTERM"
    latest = ckpt.latest(run_dir / "checkpoints")
    assert latest.state["interrupted"] and latest.state["optimizer_iterations"] > 0
    assert (latest.epoch, latest.step) == (env["interrupted"]["epoch"] - 1, env["interrupted"]["step_in_epoch"])
    import keras

    model = keras.saving.load_model(run_dir / "checkpoints" / "last.keras", safe_mode=True)
    assert int(model.optimizer.iterations.numpy()) == latest.state["optimizer_iterations"]
    result, _ = _finish(recipe, run_dir, "--resume")
    _same_as(result, reference)


TINY = """
name: tiny
seed: 1
data: {source: synthetic, samples: 200, shape: [4], num_classes: 2, split: {test: 0.2}}
model: {architecture: mlp, units: [8]}
train: {epochs: 2, batch_size: 32, callbacks: {tensorboard: false}}
"""


def _interrupted_run(tmp_path) -> tuple[Path, Path]:
    """A finished tiny run, relabelled as interrupted (what a SIGTERM leaves, minus the wait)."""
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    run_dir = tmp_path / "run"
    train(load_recipe(recipe), run_dir, progress="none")
    env = json.loads((run_dir / "env.json").read_text())
    env["status"] = "interrupted"
    (run_dir / "env.json").write_text(json.dumps(env))
    return recipe, run_dir


def test_resume_refusals(tmp_path):
    from dlcli.errors import RunDirError, UsageError
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    recipe, run_dir = _interrupted_run(tmp_path)
    other = load_recipe(recipe, ["train.optimizer.learning_rate=0.5"])
    with pytest.raises(RunDirError, match=r"different recipe \(train\.optimizer\.learning_rate: 0\.001 -> 0\.5\)"):
        train(other, run_dir, progress="none")
    with pytest.raises(UsageError, match="--resume needs --run-dir"):
        train(load_recipe(recipe), None, resume=True)
    with pytest.raises(UsageError, match="contradict"):
        train(load_recipe(recipe), run_dir, resume=True, overwrite=True)
    # where it runs is not what it trains: another strategy may resume it
    result = train(load_recipe(recipe, ["train.strategy=one_device"]), run_dir, progress="none")
    assert result.epochs_run == 2
    with pytest.raises(RunDirError, match="completed; there is nothing to resume"):
        train(load_recipe(recipe), run_dir, resume=True, progress="none")
    with pytest.raises(RunDirError, match="already exists"):  # a finished run is not resumed silently
        train(load_recipe(recipe), run_dir, progress="none")


def test_a_run_that_is_still_going_is_not_touched(tmp_path):
    from dlcli.errors import RunDirError
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    recipe, run_dir = _interrupted_run(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        env = json.loads((run_dir / "env.json").read_text())
        env.update(status="running", pid=sleeper.pid)
        (run_dir / "env.json").write_text(json.dumps(env))
        with pytest.raises(RunDirError, match=f"another dlcli process \\(pid {sleeper.pid}"):
            train(load_recipe(recipe), run_dir, progress="none")
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow  # several trainings: ~18 s
def test_resume_cli_errors_are_one_line(tmp_path):
    recipe, run_dir = _interrupted_run(tmp_path)
    r = subprocess.run([sys.executable, "-m", "dlcli", "train", str(recipe), "--resume"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--run-dir" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dlcli", "train", str(recipe), "--run-dir", str(run_dir),
                        "--set", "train.epochs=3"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 5 and "train.epochs: 2 -> 3" in r.stderr and "Traceback" not in r.stderr


def test_checkpoint_writes_leave_a_complete_one_at_every_instant(tmp_path):
    """In-process: a failure inside a write leaves the previous checkpoint untouched."""
    folder = tmp_path / "checkpoints"

    def snap(epoch, step, value):
        return ckpt.Snapshot(epoch, step, {"model/0": np.full(3, value)}, {"value": value})

    def save(path):
        path.write_bytes(b"model")

    ckpt.write(folder, snap(1, 0, 1.0), save)
    assert (folder / "last.keras").read_bytes() == b"model"

    def broken(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.write(folder, snap(1, 5, 2.0), broken)
    only = ckpt.latest(folder)
    assert (only.epoch, only.step, only.state["value"]) == (1, 0, 1.0)
    assert only.arrays()["model/0"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in (folder / ckpt.RESUME).iterdir()] == [only.path.name]  # nothing partial left
    ckpt.write(folder, snap(2, 0, 3.0), save)
    assert [c.epoch for c in ckpt.complete(folder)] == [2]  # the older one is gone once the new one is complete
    # a leftover temporary folder (a SIGKILL mid-write) is ignored, then cleared
    (folder / ckpt.RESUME / ".ckpt-E0002-S000009.tmp-1").mkdir()
    assert ckpt.latest(folder).epoch == 2
    ckpt.clear_partial(folder)
    assert len(list((folder / ckpt.RESUME).iterdir())) == 1
