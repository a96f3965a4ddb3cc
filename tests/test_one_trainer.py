"""One trainer for every stage: prune, qat and distill run through the same loop as train
(augmentation, class weights, strategies, step-exact resume after SIGKILL, SIGTERM, a
failed stage marked failed), steps_per_execution changes nothing but speed, and the
library's train() runs the recipe's compress and export stages."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlcli.recipe.loader import load_recipe
from dlcli.train import train

REPO = Path(__file__).resolve().parent.parent

# dropout and Adam: their state must survive a resume; a checkpoint at every epoch end
# (interval 0), which the stages inherit, so a kill after the N-th lands at a known epoch
RECIPE = """
name: stages
seed: 6
data: {{source: synthetic, samples: {n}, shape: [12], num_classes: 3, noise: 0.5,
        split: {{validation: 0.15, test: 0.2}}}}
model: {{architecture: mlp, units: [48, 24], dropout: 0.2}}
train:
  epochs: 2
  batch_size: 16
  optimizer: {{name: adam, learning_rate: 0.01}}
  callbacks: {{tensorboard: false, checkpoint: {{min_interval_seconds: {interval}}}}}
"""
STUDENT = """
name: small
seed: 6
data: {source: synthetic, samples: 10, shape: [12], num_classes: 3}
model: {architecture: mlp, units: [8], dropout: 0.1}
train:
  epochs: 3
  batch_size: 16
  optimizer: {name: adam, learning_rate: 0.01}
  callbacks: {tensorboard: false, checkpoint: {min_interval_seconds: 0}}
"""
# stops the process with SIGKILL right after the N-th checkpoint is in place
KILLER = """
import os, signal, sys
import dlcli.train.resume as R

nth = int(sys.argv[1])
sys.argv = [sys.argv[0], *sys.argv[2:]]
calls = {"n": 0}
link = R._link_last

def killed(*args, **kwargs):
    link(*args, **kwargs)
    calls["n"] += 1
    if calls["n"] == nth:
        os.kill(os.getpid(), signal.SIGKILL)

R._link_last = killed
from dlcli.cli.main import run
run()
"""


def _dlcli(*args, killer_nth: int | None = None, **kw) -> subprocess.CompletedProcess:
    pre = [sys.executable, "-c", KILLER, str(killer_nth)] if killer_nth else [sys.executable, "-m", "dlcli"]
    return subprocess.run([*pre, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO, **kw, check=False)


def _digest(run: Path) -> str:
    return json.loads((run / "env.json").read_text())["weights_sha256"]


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    """A trained MLP whose checkpoints are written at every epoch end (inherited by its stages)."""
    root = tmp_path_factory.mktemp("one_trainer")
    recipe = root / "r.yaml"
    recipe.write_text(RECIPE.format(n=400, interval=0))
    (root / "student.yaml").write_text(STUDENT)
    train(load_recipe(recipe), root / "dense", progress="none")
    return root / "dense"


def _keras_fit_calls(source: str) -> list[int]:
    """Lines that call ``.fit(`` with Keras's training arguments (the fitted preprocessing's
    own ``fit(x, y, ...)`` is not a training loop)."""
    words = {"epochs", "callbacks", "validation_data", "batch_size", "steps_per_epoch", "verbose"}
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fit"
            and words & {k.arg for k in node.keywords}]


def test_no_model_fit_left_in_dlcli():
    assert _keras_fit_calls("model.fit(ds, validation_data=val, epochs=3, verbose=0)") == [1]
    found = [f"{p.relative_to(REPO)}:{line}" for p in (REPO / "dlcli").rglob("*.py")
             for line in _keras_fit_calls(p.read_text())]
    assert not found, found


def test_steps_per_execution_changes_nothing_but_speed(tiny_recipe, tmp_path):
    digests = {}
    for spe in ("1", "5", "auto"):
        res = train(load_recipe(tiny_recipe, [f"train.steps_per_execution={spe}"]), tmp_path / spe, progress="none")
        digests[spe] = res.weights_digest
        assert json.loads((tmp_path / spe / "env.json").read_text())["weights_sha256"] == res.weights_digest
    assert digests["1"] == digests["5"] == digests["auto"]


def _prune_with(dense: Path, out: Path, **data_update):
    """Prune ``dense`` with its recipe's data section changed (the stage reads it from the run)."""
    from dlcli.compress.prune import _resolve_spec, prune_stage
    from dlcli.rundir import open_run
    from dlcli.train.trainer import run_stage

    run = open_run(dense)
    run.recipe = run.recipe.model_copy(update={"data": run.recipe.data.model_copy(update=data_update)})
    spec = _resolve_spec(run, None, epochs=1, min_size=0)
    return run_stage(prune_stage(run, spec), out, progress="none")


@pytest.mark.slow
def test_prune_honours_augmentation_and_class_weights(dense, tmp_path):
    from dlcli.recipe.data import AugmentSpec

    plain = _prune_with(dense, tmp_path / "plain")  # runs are deterministic (see the resume tests)
    augmented = _prune_with(dense, tmp_path / "aug", augment=AugmentSpec(noise=0.3))
    weighted = _prune_with(dense, tmp_path / "weighted", class_weight={0: 5.0, 1: 1.0, 2: 1.0})
    assert augmented.weights_digest != plain.weights_digest
    assert weighted.weights_digest != plain.weights_digest


def _teacher_copy(dense: Path, where: Path, **data_update) -> Path:
    """The teacher run with its recipe's data section changed (distillation reads the teacher's data)."""
    from dlcli.recipe.loader import recipe_to_yaml
    from dlcli.rundir import open_run

    where.mkdir()
    for name in ("model.keras", "preprocessing.json", "metrics.json", "env.json", "labels.txt"):
        (where / name).write_bytes((dense / name).read_bytes())
    recipe = open_run(dense).recipe
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update=data_update)})
    (where / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    return where


@pytest.mark.slow
def test_distill_honours_class_weights_and_augmentation(dense, tmp_path):
    from dlcli.compress.distill import distill
    from dlcli.recipe.data import AugmentSpec

    student = dense.parent / "student.yaml"
    distill(dense, student, tmp_path / "plain", progress="none")
    for name, update in (("weighted", {"class_weight": {0: 5.0, 1: 1.0, 2: 1.0}}),
                         ("augmented", {"augment": AugmentSpec(noise=0.3)})):
        distill(_teacher_copy(dense, tmp_path / f"teacher-{name}", **update), student, tmp_path / name,
                progress="none")
        assert _digest(tmp_path / name) != _digest(tmp_path / "plain"), name  # the distilled student
        assert _digest(tmp_path / name / "student-alone") != _digest(tmp_path / "plain" / "student-alone"), name


def _reference(command: str, dense: Path, out: Path) -> str:
    """The uninterrupted run, in this process (the same code and seeds as a CLI run)."""
    if command == "prune":
        from dlcli.compress.prune import prune

        prune(dense, out, epochs=40, progress="none")
    elif command == "qat":
        from dlcli.compress.qat import qat

        qat(dense, out, epochs=40, progress="none")
    else:
        from dlcli.compress.distill import distill
        from dlcli.recipe.loader import load_recipe

        distill(dense, load_recipe(dense.parent / "student.yaml", ["train.epochs=40"]), out, progress="none")
    return _digest(out)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["prune", "distill", "qat"])
def test_sigterm_then_sigkill_then_the_same_command_resumes_to_equal_weights(dense, tmp_path, command):
    """SIGTERM mid-run: exit 130 with a checkpoint; the same command resumes and is killed
    (SIGKILL) after its next checkpoint; the same command again ends with the weights of
    an uninterrupted run (sha256-equal), every stage of it."""
    want = _reference(command, dense, tmp_path / "ref")
    run = tmp_path / "out"
    args = [command, dense, "--epochs", "40"] if command in ("prune", "qat") else \
        ["distill", dense, dense.parent / "student.yaml", "--set", "train.epochs=40"]
    args += ["--run-dir", run, "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "dlcli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 120
    while not list((run / "checkpoints" / "resume").glob("ckpt-*")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM" in err and "Traceback" not in err
    env = json.loads((run / "env.json").read_text())
    assert env["status"] == "interrupted" and env["stage"] == command
    stopped_at = env["interrupted"]["epoch"]
    killed = _dlcli(*args, killer_nth=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    again = _dlcli(*args)
    assert again.returncode == 0, again.stderr
    env = json.loads((run / "env.json").read_text())
    assert env["status"] == "completed" and len(env["resumed"]) == 2 and stopped_at < 40
    assert _digest(run) == want
    if command == "distill":
        assert _digest(run / "student-alone") == _digest(tmp_path / "ref" / "student-alone")


def test_a_failed_stage_is_marked_failed_and_does_not_block_a_retry(dense, tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    assert "architecture: mlp, units: [8], dropout: 0.1" in STUDENT
    bad.write_text(STUDENT.replace("model: {architecture: mlp, units: [8], dropout: 0.1}",
                                   "model: {layers: [{type: Flatten}, {type: Dense, units: 5, activation: softmax}]}"))
    for _ in range(2):  # the retry fails the same way (exit 3), it is not refused as a live run (exit 5)
        r = cli("distill", dense, bad, "--run-dir", tmp_path / "d")
        assert r.exit_code == 3, r.stderr
        assert json.loads((tmp_path / "d" / "env.json").read_text())["status"] == "failed"


@pytest.mark.distributed
def test_prune_and_distill_run_under_the_recipes_strategy(dense, tmp_path):
    """Mirrored on two logical CPUs (set on the source recipe for pruning, on the student
    recipe for distillation): every stage trains on both replicas; the masks stay
    identical on each, and the target is reached."""
    mirrored = ["--set", "train.strategy=mirrored", "--set", "train.cpu_devices=2"]
    r = _dlcli("prune", dense, "--sparsity", "0.6", "--epochs", "2", "--min-size", "0", *mirrored, "--json",
               "--run-dir", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    env = json.loads((tmp_path / "p" / "env.json").read_text())
    assert env["strategy"]["name"] == "mirrored" and env["strategy"]["replicas"] == 2
    assert json.loads(r.stdout)["sparsity"] == pytest.approx(0.6, abs=0.01)
    r = _dlcli("distill", dense, dense.parent / "student.yaml", *mirrored, "--json", "--run-dir", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    for stage in ("d", "d/student-alone"):
        env = json.loads((tmp_path / stage / "env.json").read_text())
        assert env["strategy"]["replicas"] == 2 and env["status"] == "completed"


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow
def test_library_train_runs_the_compress_and_export_stages(tmp_path):
    recipe = tmp_path / "pipe.yaml"
    recipe.write_text(RECIPE.format(n=200, interval=30)
                      + "compress: {prune: {sparsity: 0.5, epochs: 1}}\nexport: {formats: [tflite]}\n")
    res = train(load_recipe(recipe), tmp_path / "run", progress="none")
    assert [s.name for s in res.pipeline.stages] == ["train", "prune"]
    assert res.pipeline.export is not None and not res.pipeline.export.failed
    assert (tmp_path / "run" / "pipeline.json").exists()
    assert json.loads((tmp_path / "run" / "pruned" / "env.json").read_text())["stage"] == "prune"
    assert train(load_recipe(recipe), tmp_path / "solo", progress="none", pipeline=False).pipeline is None
    assert not (tmp_path / "solo" / "pruned").exists()
    # a pipeline stopped before its end continues where it stopped: the finished stages are kept
    (tmp_path / "run" / "pipeline.json").unlink()
    before = _digest(tmp_path / "run" / "pruned")
    again = train(load_recipe(recipe), tmp_path / "run", progress="none")
    assert [s.name for s in again.pipeline.stages] == ["train", "prune"]
    assert _digest(tmp_path / "run" / "pruned") == before
