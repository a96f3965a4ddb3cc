"""VAEs (architecture vae) and anomaly detection by reconstruction error (anomaly:): trained
by the one trainer, the threshold calibrated and scored, used by predict, evaluate, export,
report; resume; bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import REPO, one_line_error, sigkill_after_mid_epoch_checkpoint

DIGITS = str(REPO / "data" / "digits" / "digits.csv.gz")

BASE = """
version: 1
name: tiny_recon
seed: 5
task: reconstruction
data:
  source: csv
  path: {digits}
  header: false
  label_column: 64
  reshape: [8, 8, 1]
  normalize: {{method: rescale, scale: 0.0625}}
  split: {{validation: 0.2, test: 0.3, stratify: true}}
model:
{model}
train:
  epochs: {epochs}
  batch_size: 32
  steps_per_execution: 1
  optimizer: {{name: adam, learning_rate: 0.005}}
  loss: mse
  callbacks: {{tensorboard: false, checkpoint: {{min_interval_seconds: 0.2}}}}
"""
AUTOENCODER = "  architecture: autoencoder\n  kind: dense\n  units: [32]\n  latent_dim: 8\n  output_activation: sigmoid"
VAE = ("  architecture: vae\n  kind: dense\n  units: [32]\n  latent_dim: 4\n  kl_weight: 0.5\n"
       "  output_activation: sigmoid")
ANOMALY = "anomaly:\n  normal_classes: [0, 1]\n  percentile: 90\n"


def recipe(write_recipe, model=AUTOENCODER, epochs=4, extra="", name="recipe.yaml"):
    return write_recipe(BASE.format(digits=DIGITS, model=model, epochs=epochs) + extra, name)


def test_roc_auc_and_flag_metrics_on_known_cases():
    from dlcli.anomaly import flag_metrics, roc_auc

    truth = np.array([0, 0, 1, 1], bool)
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), truth) == 1.0
    assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), truth) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), truth) == 0.5  # ties count half
    assert roc_auc(np.array([0.1, 0.2]), np.array([0, 0], bool)) is None
    m = flag_metrics(np.array([0.1, 0.35, 0.3, 0.4]), truth, threshold=0.25)
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 0, "tn": 1}
    assert (m["precision"], m["recall"], m["false_positive_rate"]) == (2 / 3, 1.0, 0.5)


def test_anomaly_detector_calibrates_and_flags(cli, write_recipe, tmp_path):
    run = tmp_path / "run"
    r = cli("train", recipe(write_recipe, extra=ANOMALY), "--run-dir", run, "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    env = json.loads((run / "env.json").read_text())
    calibrated = json.loads((run / "anomaly.json").read_text())
    # train and validation hold the normal digits only (0 and 1: about a fifth of the data); test all of them
    sizes = env["data_sizes"]
    assert sizes["train"] < 0.25 * 1797 * 0.5 and sizes["test"] == calibrated["test"]["examples"] > 500
    assert calibrated["calibrated_on"] == {**calibrated["calibrated_on"], "split": "validation"}
    assert env["anomaly"]["threshold"] == calibrated["threshold"] > 0
    test = calibrated["test"]
    assert test["roc_auc"] > 0.8  # four epochs already tell 0/1 from the other digits
    assert 0.0 < test["false_positive_rate"] < 0.3 and test["anomalies"] > test["examples"] / 2

    r = cli("evaluate", run, "--json")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)["metrics"]
    assert metrics["anomaly_roc_auc"] == pytest.approx(test["roc_auc"], abs=1e-6)
    assert metrics["anomaly_recall"] == pytest.approx(test["recall"], abs=1e-6)

    rows = np.loadtxt(DIGITS, delimiter=",")[:10]
    np.save(tmp_path / "ten.npy", rows[:, :64])
    r = cli("predict", run, tmp_path / "ten.npy", "--json")
    assert r.exit_code == 0, r.stderr
    preds = json.loads(r.stdout)["predictions"]
    assert all(p["anomaly"] == (p["score"] > calibrated["threshold"]) for p in preds)
    assert {p["input"]: p["score"] for p in preds}["ten.npy[0]"] < calibrated["threshold"]  # a normal 0

    r = cli("export", run, "--tflite", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((run / "export" / "anomaly.json").read_text()) == calibrated
    r = cli("report", run, "--json")
    assert r.exit_code == 0, r.stderr
    assert "anomaly" in json.loads(r.stdout)["sections"]


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow (CI runs both)
def test_a_vae_trains_samples_reconstructs_and_exports(cli, write_recipe, tmp_path):
    import keras

    run = tmp_path / "run"
    r = cli("train", recipe(write_recipe, model=VAE, epochs=3), "--run-dir", run, "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert {"vae_sampling", "decoder", "z_mean", "z_log_var"} <= {layer.name for layer in model.layers}
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    # inference goes through the latent mean: deterministic
    assert np.array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    r = cli("predict", run, "5", "--out", tmp_path / "samples", "--json")
    assert r.exit_code == 0, r.stderr
    assert np.load(tmp_path / "samples" / "samples.npz")["outputs"].shape == (5, 8, 8, 1)
    r = cli("export", run, "--tflite", "--onnx", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["passed"]
    r = cli("report", run, "--json")
    assert r.exit_code == 0, r.stderr
    assert "samples" in json.loads(r.stdout)["sections"]
    # the decoder alone: latent vectors in, new digits out, gated on fixed latents
    r = cli("export", run, "--decoder", "--tflite", "--quantize", "int8", "--json")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["passed"] and manifest["part"] == "decoder"
    assert {a["inputs"][0]["shape"][-1] for a in manifest["artifacts"]} == {4}  # latent_dim
    assert {a["checks"]["metric"] for a in manifest["artifacts"]} == {"sample_error"}
    decoder = run / "export" / "decoder" / "model_int8.tflite"
    r = cli("predict", decoder, "3", "--out", tmp_path / "decoded", "--json")
    assert r.exit_code == 0, r.stderr
    assert np.load(tmp_path / "decoded" / "samples.npz")["outputs"].shape == (3, 8, 8, 1)
    r = cli("benchmark", decoder, "--runs", "3", "--warmup", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["metric"]["name"] == "sample_error"
    # packaged for a device: the decoder's int8 file, and its README example runs as written
    r = cli("package", run, "--decoder", "--target", "tflite-int8", "--out", tmp_path / "decoder.zip", "--json")
    assert r.exit_code == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "decoder.zip") as zf:
        assert json.loads(zf.read("manifest.json"))["part"] == "decoder"
        assert zf.read("model_int8.tflite") == decoder.read_bytes()
        assert sorted(zf.namelist()) == ["README.md", "manifest.json", "model_int8.tflite", "preprocessing.json"]
        zf.extractall(tmp_path / "pkg")
    readme = (tmp_path / "pkg" / "README.md").read_text()
    assert "The decoder takes a latent vector of 4 standard normal values." in readme
    code = re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "pkg", capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
    assert done.returncode == 0, done.stderr
    shape, lo, hi = done.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert shape.startswith("(8, 8, 1)") and -0.5 <= float(lo) <= float(hi) <= 16.5  # raw pixels: 0..16


def test_decoder_export_of_a_run_without_one_is_refused(cli, write_recipe, tmp_path):
    run = tmp_path / "run"
    assert cli("train", recipe(write_recipe, epochs=1), "--run-dir", run, "--quiet").exit_code == 0
    r = cli("export", run, "--decoder")
    assert "has no decoder" in one_line_error(r, 2)
    assert not (run / "export" / "decoder").exists()
    r = cli("package", run, "--decoder", "--target", "tflite", "--out", tmp_path / "d.zip")
    assert "has no decoder" in one_line_error(r, 2)
    assert not (run / "export" / "decoder").exists() and not (tmp_path / "d.zip").exists()


def test_the_kl_term_is_in_the_loss(write_recipe, tmp_path):
    """The same VAE with kl_weight 0 and 1: the KL term adds to the training loss."""
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    losses = {}
    for weight in ("0.0", "1.0"):
        path = recipe(write_recipe, model=VAE.replace("kl_weight: 0.5", f"kl_weight: {weight}"), epochs=1,
                      name=f"vae{weight}.yaml")
        res = train(load_recipe(path), tmp_path / weight, progress="none")
        losses[weight] = res.history[0]["loss"]
    assert losses["1.0"] > losses["0.0"]


@pytest.mark.parametrize("extra,model,task,code,where", [
    (ANOMALY, AUTOENCODER, "classification", 2, "anomaly needs task: reconstruction"),
    ("anomaly:\n  normal_classes: [42]\n", AUTOENCODER, "reconstruction", 3, "anomaly.normal_classes"),
    ("anomaly:\n  percentile: 90\n  false_positive_rate: 0.1\n", AUTOENCODER, "reconstruction", 2, "anomaly"),
    ("", VAE.replace("latent_dim: 4", "latent_dim: 0"), "reconstruction", 2, "model.latent_dim"),
])
def test_bad_anomaly_and_vae_recipes_are_one_line(cli, write_recipe, tmp_path, extra, model, task, code, where):
    path = recipe(write_recipe, model=model, extra=extra)
    path.write_text(path.read_text().replace("task: reconstruction", f"task: {task}"))
    r = cli("train", path, "--run-dir", tmp_path / "run")
    assert where in one_line_error(r, code)


@pytest.mark.slow
def test_a_vae_killed_mid_epoch_resumes_to_the_same_weights(write_recipe, tmp_path):
    # about 450 steps an epoch: several mid-epoch checkpoints (every 0.2 s) in each, for the killer to catch
    path = recipe(write_recipe, model=VAE, epochs=3, extra=ANOMALY.replace("[0, 1]", "[0, 1, 2, 3, 4]"))
    path.write_text(path.read_text().replace("batch_size: 32", "batch_size: 1"))

    def cmd(run_dir):
        return [sys.executable, "-m", "dlcli", "train", str(path), "--run-dir", str(run_dir), "--json", "--quiet"]

    ref = subprocess.run(cmd(tmp_path / "ref"), capture_output=True, text=True, timeout=300, check=False)
    assert ref.returncode == 0, ref.stderr
    run_dir = tmp_path / "killed"
    sigkill_after_mid_epoch_checkpoint(cmd(run_dir), run_dir)
    done = subprocess.run(cmd(run_dir), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["weights_sha256"] == json.loads(ref.stdout)["weights_sha256"]
    assert json.loads((run_dir / "anomaly.json").read_text()) == json.loads((tmp_path / "ref" / "anomaly.json").read_text())
