"""What the one trainer trains: a :class:`Stage` (the recipe that drives data and training,
a model factory, and the stage's own files) built into a :class:`Trainable` (the compiled
model, the model to save, an optional train step and extra checkpointed state).

Training, pruning, distillation and its student-alone baseline are all stages handed to
:func:`dlcli.train.trainer.run_stage`, so every one gets the same strategies, step-exact
resume, signal handling, divergence guard, augmentation, class weights and seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Trainable:
    model: Any  # compiled keras.Model the loop trains (its optimizer, loss and metrics)
    output: Any = None  # the model that is saved and evaluated (default: ``model``; a distiller's student)
    train_step: Callable | None = None  # replaces ``model.train_step`` (e.g. masks applied after the update)
    state: list = field(default_factory=list)  # variables outside the model that checkpoints carry (masks)
    callbacks: list = field(default_factory=list)  # run before the recipe's (they may add to the epoch's logs)
    evaluated: Any = None  # the model whose test_step gives the final metrics of every split (default: output)
    final: Callable[[dict], dict] | None = None  # adds to the final metrics (e.g. a GAN's sample scores)

    def __post_init__(self):
        if self.output is None:
            self.output = self.model
        if self.evaluated is None:
            self.evaluated = self.output


@dataclass
class Stage:
    """``build(ctx, steps_per_epoch, replicas)`` runs inside ``strategy.scope()`` and returns the
    :class:`Trainable`; ``prepare(bundle, run_dir, chief)`` runs before it, outside the scope
    (e.g. a GAN's judge); ``finish(run_dir, trainable, metrics)`` writes the stage's own
    files (chief only) and returns extra ``env.json`` keys."""

    kind: str  # train | prune | distill | student-alone | judge (a GAN's)
    recipe: Any  # written as recipe.yaml and compared on resume; its data: section is read
    build: Callable[[Any, int, int], Trainable]
    train: Any = None  # the TrainSpec that drives the loop (default: recipe.train)
    preprocessor: Any = None  # fitted preprocessing to reuse (a compression stage's source run)
    env: dict[str, Any] = field(default_factory=dict)  # extra env.json keys (e.g. pruned_from)
    finish: Callable[[Path, Trainable, dict], dict | None] | None = None
    prepare: Callable[[Any, Path, bool], None] | None = None
    best_checkpoint: bool = True  # checkpoints/best.keras (off where "best" would undo the stage)

    def __post_init__(self):
        if self.train is None:
            self.train = self.recipe.train


def model_stage(recipe, allow_code: bool = False) -> Stage:
    """Ordinary training: the recipe's model, optimizer, loss and metrics (a GAN's two networks)."""
    if recipe.task == "gan":
        from dlcli.gan import gan_stage

        return gan_stage(recipe, allow_code)

    def build(ctx, steps: int, replicas: int) -> Trainable:
        from dlcli.models import build_model

        model = build_model(recipe, ctx, allow_code=allow_code)
        compile_like_recipe(model, recipe, ctx, steps, scaled_optimizer(recipe.train, replicas))
        return Trainable(model)

    finish = None
    if recipe.anomaly is not None:
        def finish(run_dir, trainable, metrics):
            from dlcli.anomaly import calibrate

            out = calibrate(run_dir, trainable.output, list(metrics))
            return {"anomaly": {k: out[k] for k in ("threshold", "rule") if k in out}
                    | ({"test_roc_auc": out["test"]["roc_auc"]} if "test" in out else {})}

    return Stage("train", recipe, build, finish=finish)


def compile_like_recipe(model, recipe, ctx, steps: int, optimizer_spec, train=None) -> None:
    """Compile ``model`` with the recipe's loss and metrics and an optimizer from ``optimizer_spec``."""
    from dlcli.train.optim import make_loss, make_metrics, make_optimizer, needs_one_hot

    tr = train or recipe.train
    one_hot = needs_one_hot(tr.loss, recipe.task, tr.metrics)
    model.compile(optimizer=make_optimizer(optimizer_spec, steps, tr.epochs),
                  loss=make_loss(tr.loss, recipe.task, ctx.num_outputs, one_hot),
                  metrics=make_metrics(tr.metrics, recipe.task), jit_compile=tr.jit_compile)


def scaled_optimizer(train, replicas: int):
    """The optimizer spec, its learning rate times ``replicas`` with ``train.scale_learning_rate``."""
    spec = train.optimizer
    if not train.scale_learning_rate or replicas <= 1:
        return spec
    lr = spec.learning_rate
    lr = lr * replicas if isinstance(lr, float) else lr.model_copy(update={"initial": lr.initial * replicas})
    return spec.model_copy(update={"learning_rate": lr})
