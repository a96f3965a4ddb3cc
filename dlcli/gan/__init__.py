"""Generative adversarial networks (``task: gan``) as a stage of the one trainer.

``gan_stage(recipe)`` is what :func:`dlcli.train.train` runs for a GAN recipe: before the
strategy's scope, the judge (:mod:`dlcli.gan.judge`) and the real examples' features;
inside it, the two networks (:mod:`dlcli.gan.networks`) in a :class:`~dlcli.gan.model.GAN`
whose train step alternates the updates. The run directory holds the generator as
``model.keras`` (what export, predict and package use), ``discriminator.keras``,
``judge/`` (the classifier run that scores the samples, unless the recipe names one) and
``samples/epoch-NNN.png``.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from dlcli.errors import DataError

JUDGE_DIR = "judge"


def example_shape(bundle) -> tuple:
    shape = bundle.preprocessor.input_shape
    if isinstance(shape, dict):
        raise DataError("task gan needs a single input, not data.inputs")
    return tuple(shape)


def _judge(recipe, bundle, run_dir: Path, chief: bool):
    """The recipe's judge run, else the classifier trained here first, by the one trainer,
    into RUN_DIR/judge (reused when complete, resumed when cut; other workers of a
    multi-worker run train their own copy, the same, in a temporary folder)."""
    import tempfile

    from dlcli.gan.judge import Judge, judge_recipe, load_judge
    from dlcli.train.stage import model_stage
    from dlcli.train.trainer import run_stage, seed_everything

    spec, shape = recipe.model.gan, example_shape(bundle)
    if spec.judge:
        return Judge(load_judge(Path(spec.judge), shape))
    if bundle.num_classes < 2:
        raise DataError("model.gan: judging samples needs labelled data with at least 2 classes "
                        "(data.label_column), or a classification run as model.gan.judge")
    stage = model_stage(judge_recipe(recipe))
    stage.kind, stage.preprocessor = "judge", bundle.preprocessor
    target = run_dir / JUDGE_DIR if chief else Path(tempfile.mkdtemp(prefix="dlcli-judge-")) / JUDGE_DIR
    run_stage(stage, target, reuse=True, progress="none")
    seed_everything(recipe.seed, recipe.train.deterministic)  # the GAN starts from the same state either way
    return Judge(load_judge(target, shape))


def gan_stage(recipe, allow_code: bool = False):
    from dlcli.train.stage import Stage

    gan = _GanParts(recipe, allow_code)
    return Stage("train", recipe, gan.build, train=_train_spec(recipe), prepare=gan.prepare, finish=gan.finish,
                 env={"gan": {"loss": recipe.model.gan.loss, "conditional": recipe.model.gan.conditional}})


def _train_spec(recipe):
    """The recipe's training settings, with the GAN's score as the default quantity to watch."""
    tr = recipe.train
    c = tr.callbacks
    updates = {}
    for key in ("early_stopping", "checkpoint", "reduce_lr_on_plateau"):
        sub = getattr(c, key)
        if sub is not None and sub.monitor == "val_loss":  # the default: a GAN has no single loss
            updates[key] = sub.model_copy(update={"monitor": "val_frechet_distance"})
    return tr.model_copy(update={"callbacks": c.model_copy(update=updates)}) if updates else tr


class _GanParts:
    def __init__(self, recipe, allow_code: bool):
        self.recipe, self.spec, self.allow_code = recipe, recipe.model.gan, allow_code
        self.judge = None
        self.splits: dict = {}

    def prepare(self, bundle, run_dir: Path, chief: bool) -> None:
        from dlcli.gan.networks import check_conditional
        from dlcli.gan.scoring import split_arrays

        self.shape, self.classes = example_shape(bundle), bundle.num_classes
        check_conditional(self.spec, self.classes)
        self.judge = _judge(self.recipe, bundle, run_dir, chief)
        self.splits = {name: self.judge.features(split_arrays(split)[0]) for name, split in bundle.splits.items()}
        self.reference = "validation" if "validation" in self.splits else "train"
        self.value_range = bundle.train.value_range()
        self.run_dir, self.chief = run_dir, chief

    def build(self, ctx, steps: int, replicas: int):
        from dlcli.gan.model import GAN
        from dlcli.gan.networks import build_discriminator, build_generator
        from dlcli.gan.scoring import GanScore
        from dlcli.train.optim import make_optimizer
        from dlcli.train.stage import Trainable, scaled_optimizer

        spec, tr, seed = self.spec, self.recipe.train, self.recipe.seed
        g = build_generator(spec, self.shape, self.classes, seed, self.allow_code)
        d = build_discriminator(spec, self.shape, self.classes, seed, self.allow_code)
        model = GAN(g, d, spec, seed)

        def optimizer(which):
            return make_optimizer(scaled_optimizer(tr.model_copy(update={"optimizer": which or tr.optimizer}),
                                                   replicas), steps, tr.epochs)

        model.compile(optimizer(spec.generator_optimizer), optimizer(spec.discriminator_optimizer),
                      jit_compile=tr.jit_compile)
        prefix = "val_" if self.reference == "validation" else ""
        self.score = GanScore(g, self.judge, self.splits[self.reference], spec, self.classes, seed,
                              self.value_range, prefix, self.run_dir if self.chief else None)
        return Trainable(model, output=g, state=model.extra_state, callbacks=[self.score], evaluated=model,
                         final=self.final)

    def final(self, metrics: dict) -> dict:
        """Every split's metrics plus the Frechet distance of the kept generator's samples to
        that split (and the conditional class accuracy)."""
        from dlcli.gan.judge import frechet_distance

        features, accuracy = self.score.judged()
        out = {}
        for name, m in metrics.items():
            distance = float("nan") if features is None else frechet_distance(features, self.splits[name])
            out[name] = {**m, "frechet_distance": distance}
            if accuracy is not None:
                out[name]["class_accuracy"] = accuracy
        return out

    def finish(self, run_dir: Path, trainable, metrics: dict) -> dict:
        from dlcli.gan.scoring import SAMPLES_DIR
        from dlcli.train.callbacks import save_model_atomic

        save_model_atomic(trainable.model.discriminator, run_dir / "discriminator.keras")
        self.score.write_grid(run_dir / SAMPLES_DIR / "final.png")
        judge = str(Path(self.spec.judge).resolve()) if self.spec.judge else JUDGE_DIR
        return {"gan": {"loss": self.spec.loss, "conditional": self.spec.conditional, "judge": judge,
                        "score": "Frechet distance of judge features (generated vs real)",
                        "value_range": [float(v) for v in self.value_range]}}
