"""What every exported artifact is compared with: the inputs the gate feeds (the held-out
split, or a generator's fixed latent vectors), the Keras model's outputs on them, and the
model converted (a run's model, or its part: a VAE's decoder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlcli.export.quality import gan_inputs


@dataclass
class Reference:
    """What every artifact is compared with: the inputs fed, the Keras model's outputs on
    them, the labels (a generator: its own samples), the model converted."""

    x: Any
    y: Any
    ref: Any
    model: Any  # the Keras model converted (with the preprocessing inside when ``raw``)
    raw: bool
    keras: dict[str, Any]
    task: str  # what the gate compares: the recipe's task, or "gan" for any generator
    latents: Any = None  # n -> a generator's fixed inputs for calibration (None: not a generator)



def reference_of(run, spec, part: str | None = None) -> Reference:
    """The parity data (the held-out split, else a generator's fixed latents) and the Keras
    model's outputs on them."""
    import numpy as np

    from dlcli.export.parity import task_metric
    from dlcli.rundir import run_split

    model, task = model_part(run, part), run.recipe.task
    split = run.split_names()[-1]  # test, else validation, else train
    latents = latents_of(run, model, part)
    raw = spec.include_preprocessing and latents is None  # a generator takes latents: nothing to preprocess

    def first(n):
        return np.arange(min(n, spec.parity_samples))

    if latents is not None:  # a generator on fixed latents (and labels); the gate compares its samples
        task, split = "gan", "latent"
        x, y = latents(spec.parity_samples, 13), None
    else:
        x, y = run_split(run, split, pick=first)
    ref = np.asarray(model.predict(x, verbose=0, batch_size=256))
    y = ref if latents is not None else y
    exported = model
    if raw:  # the artifacts take (and the gate feeds) the values before reshape and normalization
        from dlcli.export.preprocessing import with_preprocessing

        x, _ = run_split(run, split, pick=first, normalize=False)
        exported = with_preprocessing(model, run.preprocessor, x)
    name, value = task_metric(ref, y, task)
    return Reference(x, y, ref, exported, raw, {"metric": name, "value": value, "samples": len(y), "split": split,
                                                 "parameters": int(model.count_params())}, task, latents)


def model_part(run, part: str | None):
    """The run's model, or its part: ``decoder``, a VAE's."""
    from dlcli.errors import UsageError

    model = run.load_model()
    if part is None:
        return model
    from dlcli.gan.sample import vae_decoder

    decoder = vae_decoder(model) if part == "decoder" else None
    if decoder is None:
        raise UsageError(f"--{part}: {run.path} has no decoder to export (a VAE run, model.architecture vae, has)")
    return decoder


def latents_of(run, model, part: str | None):
    """``(n, offset) -> inputs`` of a generator (a GAN's, a VAE's decoder), else None."""
    import numpy as np

    if part == "decoder":
        dim = int(model.inputs[0].shape[-1])
        return lambda n, offset: np.random.default_rng(run.recipe.seed + offset).standard_normal(
            (n, dim)).astype(np.float32)
    if run.recipe.task == "gan":
        return lambda n, offset: gan_inputs(run, n, offset)
    return None
