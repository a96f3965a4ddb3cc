"""Every shipped recipe and template validates and trains; the quick start meets its bar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
TEMPLATES = sorted((REPO / "dlcli" / "templates").glob("*.yaml"))


def test_there_are_recipes_for_every_model_family():
    names = {p.stem for p in RECIPES}
    assert {"digits_cnn", "breast_cancer_mlp", "digits_rnn", "digits_transformer", "digits_autoencoder",
            "digits_transfer", "digits_gan", "digits_cgan"} <= names


@pytest.mark.parametrize("path", RECIPES + TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_validates(cli, path):
    r = cli("validate", path)
    assert r.exit_code == 0, r.stderr


# the heaviest (a whole pipeline, a transfer backbone, transformers) run with -m slow
SLOW_BRIEF = {"recipes/digits_compress", "recipes/digits_transfer", "recipes/digits_transformer",
              "templates/transformer", "templates/transfer", "recipes/digits_cnn_tune",
              "recipes/digits_gan", "recipes/digits_cgan"}  # GANs: tests/test_gan.py covers them in the quick tier


def _brief(p: Path):
    pid = f"{p.parent.name}/{p.stem}"
    return pytest.param(p, id=pid, marks=[pytest.mark.slow] if pid in SLOW_BRIEF else [])


@pytest.mark.parametrize("path", [_brief(p) for p in RECIPES + TEMPLATES])
def test_trains_briefly(cli, path, tmp_path):
    brief = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=3", "--set", "train.callbacks.tensorboard=false"]
    if "\ntune:" in path.read_text():  # a search recipe: two brief trials, int8 export and timing included
        r = cli("tune", path, "--out", tmp_path / "study", "--trials", "2", "--json", *brief)
        assert r.exit_code == 0, r.stderr
        out = json.loads(r.stdout)
        assert [t["state"] for t in out["trials"]] == ["complete", "complete"]
        assert all(t["attrs"]["int8_latency_ms"] > 0 for t in out["trials"])
        return
    r = cli("train", path, "--run-dir", tmp_path / "run", "--quiet", "--json", *brief)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["epochs"] == 1 and "test" in out["metrics"]


@pytest.mark.slow
def test_digits_quick_start_reaches_095_and_reloads(cli, tmp_path):
    import keras
    import numpy as np

    from dlcli.data import load_data
    from dlcli.recipe.loader import load_recipe

    run = tmp_path / "digits"
    r = cli("train", REPO / "recipes" / "digits_cnn.yaml", "--run-dir", run, "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.95
    # the saved model, loaded in safe mode, reproduces the test accuracy on the same split
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    bundle = load_data(load_recipe(run / "recipe.yaml"))
    pred = model.predict(bundle.splits["test"].x, verbose=0).argmax(-1)
    acc = float(np.mean(pred == bundle.splits["test"].y))
    assert acc == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    # export acceptance: every format, int8 included, passes its parity gate
    r = cli("export", run, "--all", "--quantize", "int8", "--json")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["passed"] and len(manifest["artifacts"]) == 4
    assert all(a["status"] == "passed" for a in manifest["artifacts"])
