"""Judging a generator offline: the Frechet distance between generated and real examples in
the feature space of a classifier trained on the same data (the judge), and, for a
conditional GAN, the judge's accuracy on generated examples of each class.

The judge is a classification run named by ``model.gan.judge``, or a small MLP dlcli trains
on the training split before the GAN, through the one trainer, into RUN_DIR/judge/ (a
classification run of its own: resumed or reused like any). Its features are the input of
its last layer. The Frechet distance is FID's formula (Heusel et al.
2017) on those features instead of Inception's: comparable between runs on the same data
and judge, not with published FID figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlcli.errors import RunDirError


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two feature sets (rows)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(all="ignore"):
        mu_a, mu_b = a.mean(0), b.mean(0)
        s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    if not (np.isfinite(s_a).all() and np.isfinite(s_b).all() and np.isfinite(mu_a).all()):
        return float("nan")  # samples beyond float64: a generator that diverged
    try:
        w, v = np.linalg.eigh(s_a)  # Tr((S_a S_b)^1/2) = Tr((S_a^1/2 S_b S_a^1/2)^1/2): symmetric, PSD
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s_b @ root), 0, None)).sum()
    except np.linalg.LinAlgError:
        return float("nan")
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * cross)


def judge_recipe(recipe):
    """The judge dlcli trains for a GAN recipe: an MLP (128, 64) classifier on the same data
    (64 features), trained by the one trainer on one device, with the recipe's seed."""
    from dlcli.recipe.schema import Recipe

    spec = recipe.model.gan
    judge = Recipe.model_validate({
        "name": f"{recipe.name}-judge", "seed": recipe.seed, "task": "classification",
        "description": f"the classifier that judges the samples of {recipe.name}",
        "data": recipe.data.model_dump(mode="python"), "model": {"architecture": "mlp", "units": [128, 64]},
        "train": {"epochs": spec.judge_epochs, "batch_size": 64, "optimizer": {"name": "adam", "learning_rate": 1e-3},
                  "metrics": ["accuracy"], "strategy": "default", "deterministic": recipe.train.deterministic,
                  "callbacks": {"tensorboard": False, "checkpoint": None}}})
    judge._base_dir = recipe._base_dir
    return judge


def load_judge(path: Path, example_shape: tuple):
    from dlcli.rundir import is_finished_run, load_keras_model

    path = Path(path)
    model = load_keras_model(path / "model.keras" if is_finished_run(path) else path)
    have = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or have != tuple(example_shape):
        raise RunDirError(f"model.gan.judge {path}: its input {(None, *have)} does not take the data's examples "
                          f"{(None, *example_shape)}")
    return model


class Judge:
    """Features (the last layer's input) and class predictions of a classifier."""

    def __init__(self, model):
        import keras

        self.model = model
        last = model.layers[-1]
        self.features_model = keras.Model(model.inputs, last.input, name="judge_features")

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.features_model.predict(x, batch_size=256, verbose=0)).reshape(len(x), -1)

    def classes(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x, batch_size=256, verbose=0)).argmax(-1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.classes(x) == np.asarray(y).reshape(-1)))
