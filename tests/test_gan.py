"""GANs (task: gan): recipes, the adversarial step in the one trainer, the judge's scores,
sample grids, export of the generator with the parity gate, resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, one_line_error, sigkill_after_mid_epoch_checkpoint

DIGITS = str(REPO / "data" / "digits" / "digits.csv.gz")

TINY = """
version: 1
name: tiny_gan
seed: 3
task: gan
data:
  source: csv
  path: {digits}
  header: false
  label_column: 64
  reshape: [8, 8, 1]
  normalize: {{method: rescale, scale: 0.125, offset: -1.0}}
  split: {{validation: 0.2, test: 0.2, stratify: true}}
model:
  gan:
    latent_dim: 8
    loss: {loss}
    conditional: {conditional}
    judge_epochs: 3
    score_samples: 200
    grid: 4
    generator:
      layers:
        - {{type: Dense, units: 32, activation: relu}}
        - {{type: Dense, units: 64, activation: tanh}}
        - {{type: Reshape, target_shape: [8, 8, 1]}}
    discriminator:
      layers:
        - {{type: Flatten}}
        - {{type: Dense, units: 32}}
        - {{type: LeakyReLU, negative_slope: 0.2}}
        - {{type: Dense, units: 1}}
train:
  epochs: {epochs}
  batch_size: 64
  steps_per_execution: 1
  optimizer: {{name: adam, learning_rate: 0.001, beta_1: 0.5}}
  callbacks: {{tensorboard: false, checkpoint: {{min_interval_seconds: 0.2}}}}
"""


def tiny(write_recipe, loss="non_saturating", conditional=False, epochs=2, name="gan.yaml", **replace):
    text = TINY.format(digits=DIGITS, loss=loss, conditional=str(conditional).lower(), epochs=epochs)
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return write_recipe(text, name)


def test_frechet_distance_is_zero_for_the_same_set_and_the_mean_shift_squared_for_a_shifted_one():
    from dlcli.gan.judge import frechet_distance

    a = np.random.default_rng(0).standard_normal((500, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 2.0) == pytest.approx(6 * 4.0, rel=1e-6)  # same covariance: |mu_a - mu_b|^2
    assert frechet_distance(a, a * 3.0) > 10.0


def test_a_gan_trains_through_the_one_trainer_and_is_judged(cli, write_recipe, tmp_path):
    import keras

    run = tmp_path / "run"
    r = cli("train", tiny(write_recipe, epochs=3), "--run-dir", run, "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["epochs"] == 3
    for split in ("train", "validation", "test"):
        m = out["metrics"][split]
        assert {"d_loss", "g_loss", "frechet_distance"} <= set(m) and np.isfinite(m["frechet_distance"])
    history = (run / "history.csv").read_text().splitlines()
    assert "val_frechet_distance" in history[0] and len(history) == 4
    fd = [float(row.split(",")[history[0].split(",").index("val_frechet_distance")]) for row in history[1:]]
    assert fd[-1] < fd[0]  # three epochs already bring the samples closer to the digits
    for name in ("epoch-001.png", "epoch-003.png", "final.png"):
        assert (run / "samples" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    generator = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert tuple(generator.inputs[0].shape) == (None, 8) and tuple(generator.outputs[0].shape) == (None, 8, 8, 1)
    critic = keras.saving.load_model(run / "discriminator.keras", safe_mode=True)
    assert tuple(critic.outputs[0].shape) == (None, 1)
    env = json.loads((run / "env.json").read_text())
    assert env["gan"]["judge"] == "judge"  # the judge is a classification run of its own, by the one trainer
    judge_env = json.loads((run / "judge" / "env.json").read_text())
    assert judge_env["status"] == "completed" and judge_env["stage"] == "judge"
    assert json.loads((run / "judge" / "metrics.json").read_text())["test"]["accuracy"] > 0.5
    assert (run / "checkpoints" / "best.keras").exists()  # picked by val_frechet_distance, the default for a GAN


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow
def test_conditional_gan_reports_class_accuracy_and_exports_with_the_gate(cli, write_recipe, tmp_path):
    run = tmp_path / "run"
    recipe = tiny(write_recipe, loss="hinge", conditional=True, epochs=2)
    r = cli("train", recipe, "--run-dir", run, "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)["metrics"]["test"]
    assert 0.0 <= metrics["class_accuracy"] <= 1.0
    r = cli("export", run, "--tflite", "--onnx", "--quantize", "int8", "--onnx-quantize", "int8", "--json")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["passed"] and len(manifest["artifacts"]) == 4
    for a in manifest["artifacts"]:
        names = sorted(i["name"] for i in a["inputs"])  # runtimes decorate them (serving_default_label:0)
        assert len(names) == 2 and "label" in names[0] and "latent" in names[1], names
        assert a["checks"]["metric"] == "sample_error"
    _generator_downstream(cli, run, tmp_path)
    int8 = next(a for a in manifest["artifacts"] if a["name"] == "model_int8.tflite")
    assert int8["checks"]["gate"]["max_metric_drop"] == 0.1 and int8["checks"]["artifact_metric"] < 0.1
    # the real runtime, fed the class ids, answers like the Keras generator
    from dlcli.export.tflite import load
    from dlcli.rundir import load_keras_model

    z = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    labels = np.arange(5, dtype=np.int32).reshape(-1, 1)
    keras_out = load_keras_model(run / "model.keras").predict({"latent": z, "label": labels}, verbose=0)
    lite = load(run / "export" / "model_float32.tflite").predict({"latent": z, "label": labels})
    assert np.abs(lite - keras_out).max() < 1e-4


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow
def test_wasserstein_gp_with_two_critic_steps_trains(cli, write_recipe, tmp_path):
    recipe = tiny(write_recipe, loss="wasserstein_gp", epochs=1, **{"    judge_epochs: 3": "    judge_epochs: 3\n    d_steps: 2"})
    r = cli("train", recipe, "--run-dir", tmp_path / "run", "--json", "--quiet",
            "--set", "train.steps_per_epoch=4")
    assert r.exit_code == 0, r.stderr
    assert np.isfinite(json.loads(r.stdout)["metrics"]["test"]["d_loss"])


@pytest.mark.parametrize("replace,code,where", [
    ({"latent_dim: 8": "latent_dim: 0"}, 2, "model.gan.latent_dim"),
    ({"    discriminator:\n      layers:\n        - {type: Flatten}\n        - {type: Dense, units: 32}\n"
      "        - {type: LeakyReLU, negative_slope: 0.2}\n        - {type: Dense, units: 1}\n": ""},
     2, "model.gan.discriminator"),
    ({"task: gan": "task: classification"}, 2, "model.gan needs task: gan"),
    ({"units: 64, activation: tanh": "units: 32, activation: tanh", "target_shape: [8, 8, 1]": "target_shape: [4, 8, 1]"},
     3, "model.gan.generator"),
    ({"- {type: Dense, units: 1}": "- {type: Dense, units: 3}"}, 3, "model.gan.discriminator"),
])
def test_bad_gan_recipes_get_one_line_naming_the_key(cli, write_recipe, tmp_path, replace, code, where):
    r = cli("train", tiny(write_recipe, **replace), "--run-dir", tmp_path / "run")
    line = one_line_error(r, code)
    assert where in line, line


def test_conditional_gan_on_data_with_one_class_is_a_data_error(cli, write_recipe, tmp_path):
    csv = tmp_path / "one_class.csv"
    rows = np.loadtxt(DIGITS, delimiter=",")[:300]
    rows[:, 64] = 0
    np.savetxt(csv, rows, delimiter=",", fmt="%d")
    recipe = tiny(write_recipe, conditional=True, **{DIGITS: str(csv), "stratify: true": "stratify: false"})
    r = cli("train", recipe, "--run-dir", tmp_path / "run")
    assert "model.gan.conditional" in one_line_error(r, 3)
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.slow
def test_a_gan_killed_mid_epoch_resumes_to_the_same_weights(write_recipe, tmp_path):
    # 540 steps an epoch: several mid-epoch checkpoints (every 0.2 s) in each, for the killer to catch
    recipe = tiny(write_recipe, conditional=True, epochs=3, **{"batch_size: 64": "batch_size: 2"})

    def cmd(run_dir):
        return [sys.executable, "-m", "dlcli", "train", str(recipe), "--run-dir", str(run_dir), "--json", "--quiet"]

    ref = subprocess.run(cmd(tmp_path / "ref"), capture_output=True, text=True, timeout=300, check=False)
    assert ref.returncode == 0, ref.stderr
    run_dir = tmp_path / "killed"
    sigkill_after_mid_epoch_checkpoint(cmd(run_dir), run_dir)
    done = subprocess.run(cmd(run_dir), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    a, b = json.loads(ref.stdout), json.loads(done.stdout)
    assert b["weights_sha256"] == a["weights_sha256"]
    assert b["metrics"] == a["metrics"]
    assert "resuming" in done.stderr


def _generator_downstream(cli, run, tmp_path):
    """predict draws samples of a class (Keras and the int8 artifact), benchmark measures every
    artifact against the Keras samples, the report shows the grids, a package's README runs."""
    import os
    import re
    import zipfile

    r = cli("predict", run, "6", "--label", "4", "--out", tmp_path / "samples", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["predictions"]
    assert [row["input"] for row in rows] == [f"sample-{i} (4)" for i in range(1, 7)]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "grid.png", *[f"sample-{i}.png" for i in range(1, 7)], "samples.npz"]
    assert np.load(tmp_path / "samples" / "samples.npz")["outputs"].shape == (6, 8, 8, 1)
    r = cli("predict", run / "export" / "model_int8.tflite", "3", "--json")
    assert r.exit_code == 0, r.stderr
    assert [row["input"] for row in json.loads(r.stdout)["predictions"]] == ["sample-1 (0)", "sample-2 (1)",
                                                                              "sample-3 (2)"]
    r = cli("predict", run, "3", "--label", "eleven")
    assert "--label 'eleven'" in one_line_error(r, 2)
    r = cli("benchmark", run, "--runs", "5", "--warmup", "1", "--json")
    assert r.exit_code == 0, r.stderr
    bench = json.loads(r.stdout)
    assert all(m["metric"]["name"] == "sample_error" for m in bench["results"]), bench["results"]
    assert len(bench["results"]) == 5  # keras and the four exported files
    r = cli("report", run, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert "samples" in report["sections"] and any("samples_final" in p for p in report["images"])
    for target in ("tflite-int8", "onnx", "saved_model"):  # each runtime's README example runs as written
        r = cli("package", run, "--target", target, "--out", tmp_path / f"{target}.zip")
        assert r.exit_code == 0, r.stderr
        with zipfile.ZipFile(tmp_path / f"{target}.zip") as zf:
            zf.extractall(tmp_path / target)
        code = re.search(r"```python\n(.*?)```", (tmp_path / target / "README.md").read_text(), re.DOTALL).group(1)
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / target, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
        assert done.returncode == 0, f"{target}: {done.stderr}"
        shape, lo, hi = done.stdout.strip().splitlines()[-1].rsplit(" ", 2)
        assert shape.startswith("(8, 8, 1)") and -0.5 <= float(lo) <= float(hi) <= 16.5  # raw pixels: 0..16


def test_a_diverging_gan_exits_4_and_keeps_the_last_finite_generator(write_recipe, tmp_path):
    import keras

    from dlcli.errors import TrainingDivergedError
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    # epoch 1 trains normally; from epoch 2 both rates are 1e8 and the critic's scores blow up
    rate = "{name: sgd, learning_rate: {schedule: step, initial: 0.001, boundaries: [1], factor: 1.0e+11}}"
    recipe = load_recipe(tiny(write_recipe, loss="wasserstein_gp", epochs=4), [
        f"model.gan.generator_optimizer={rate}", f"model.gan.discriminator_optimizer={rate}",
        "model.gan.gp_weight=0", "train.callbacks.checkpoint.min_interval_seconds=0"])
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="epoch 2") as info:
        train(recipe, run, progress="none")
    assert info.value.exit_code == 4
    assert json.loads((run / "env.json").read_text())["status"] == "diverged"
    last = keras.saving.load_model(run / "checkpoints" / "last.keras", safe_mode=True)
    assert last.name == "generator" and all(np.isfinite(w).all() for w in last.get_weights())
    assert not (run / "model.keras").exists()
