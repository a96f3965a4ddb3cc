"""``distill(teacher_run, student_recipe) -> DistillResult`` with ``keras.distillation``.

The student is trained on the teacher run's data, through the teacher's saved
preprocessing (the student recipe provides the model and the training settings), twice
with the same seed and epochs: alone, and distilled from the teacher. The result
reports both beside the teacher. Classification only: the losses compare class
distributions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


from dlcli.atomic import copy_file, write_json, write_text
from dlcli.errors import ShapeMismatchError, UsageError


@dataclass
class DistillResult:
    run_dir: Path
    teacher: dict[str, dict[str, float]]
    student_alone: dict[str, dict[str, float]]
    distilled: dict[str, dict[str, float]]
    temperature: float
    alpha: float
    parameters: dict[str, int]
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "teacher": self.teacher, "student_alone": self.student_alone,
                "distilled": self.distilled, "temperature": self.temperature, "alpha": self.alpha,
                "parameters": self.parameters, "duration_s": round(self.duration_s, 3)}


def context_from_run(run, seed: int):
    from dlcli.models.context import BuildContext

    pre = run.preprocessor
    vocab = getattr(pre.featurizer, "vocab_size", None)
    return BuildContext(tuple(pre.input_shape), pre.input_dtype, run.recipe.task, len(pre.labels or []), (), vocab,
                        seed=seed)


def _log_view(model):
    """The same model (shared weights) with log-probabilities as outputs: logits for the losses."""
    import keras

    logits = keras.ops.log(keras.ops.clip(model.outputs[0], 1e-7, 1.0))
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def distill(teacher_run: str | Path, student_recipe, out_dir: str | Path | None = None, *,
            temperature: float | None = None, alpha: float | None = None, overwrite: bool = False,
            allow_code: bool = False, progress: str = "plain") -> DistillResult:
    import keras

    from dlcli.data.pipeline import make_dataset
    from dlcli.evaluate import evaluate_splits
    from dlcli.inspect import open_run, run_split
    from dlcli.models import build_model
    from dlcli.recipe.loader import load_recipe, recipe_hash, recipe_to_yaml
    from dlcli.train.optim import needs_one_hot
    from dlcli.runs import environment, prepare_run_dir
    from dlcli.train import callbacks as cb
    from dlcli.train.optim import make_loss, make_metrics, make_optimizer
    from dlcli.train.trainer import seed_everything

    t0 = time.time()
    keras.backend.clear_session()  # resets Keras's global seed generator: same seed, same result
    teacher_run = open_run(teacher_run)
    student = load_recipe(student_recipe) if isinstance(student_recipe, (str, Path)) else student_recipe
    spec = student.compress.distill or teacher_run.recipe.compress.distill
    temperature = temperature if temperature is not None else (spec.temperature if spec else 3.0)
    alpha = alpha if alpha is not None else (spec.alpha if spec else 0.5)
    if temperature <= 0:
        raise UsageError(f"--temperature {temperature}: must be positive")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha}: expected a value in [0, 1]")
    if teacher_run.recipe.task != "classification" or student.task != "classification":
        raise UsageError("distillation needs classification teacher and student (task: classification)")
    out = Path(out_dir) if out_dir else teacher_run.path.parent / f"{student.name}-distilled"
    out = prepare_run_dir(out, overwrite=overwrite)
    write_text(out / "recipe.yaml", recipe_to_yaml(student))
    write_json(out / "env.json", {"status": "running", "distilled_from": str(teacher_run.path.resolve())})

    splits = {s: run_split(teacher_run, s) for s in teacher_run.split_names()}
    tr = student.train
    ctx = context_from_run(teacher_run, student.seed)
    teacher = teacher_run.load_model()
    teacher.trainable = False

    initial: list = []

    def build_student():
        """The student, starting from the same initial weights every time (a fair comparison)."""
        seed_everything(student.seed, tr.deterministic)
        model = build_model(student, ctx, allow_code=allow_code)
        if initial:
            model.set_weights(initial)
        else:
            initial.extend(model.get_weights())
        t_shape, s_shape = tuple(teacher.outputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])
        if t_shape != s_shape:
            raise ShapeMismatchError(
                f"the student's output shape {(None, *s_shape)} differs from the teacher's {(None, *t_shape)}")
        return model

    x_train, y_train = splits["train"]
    steps = math.ceil(len(x_train) / tr.batch_size)
    # the student's own loss and metrics may want one-hot labels (categorical CE, AUC, precision, ...)
    one_hot = needs_one_hot(tr.loss, "classification", tr.metrics)

    def labels(y):
        return np.eye(ctx.num_outputs, dtype=np.float32)[y.astype(np.int64)] if one_hot else y

    seed_everything(student.seed, tr.deterministic)  # tf.data shuffle order depends on the global seed too
    train_ds = make_dataset(x_train, y_train, tr.batch_size, training=True, seed=student.seed)
    val = splits.get("validation")
    val_ds = make_dataset(val[0], val[1], tr.batch_size, training=False) if val else None

    def evaluate(model) -> dict[str, dict[str, float]]:
        # compile with the recipe's optimizer (built), so a saved model reloads without warnings
        model.compile(optimizer=make_optimizer(tr.optimizer, steps, tr.epochs),
                      loss=make_loss(tr.loss, "classification", ctx.num_outputs, one_hot),
                      metrics=make_metrics(tr.metrics, "classification"))
        model.optimizer.build(model.trainable_variables)
        return evaluate_splits(model, splits, tr.batch_size, labels)

    progress_cb = [cb.PlainProgress(tr.epochs)] if progress == "plain" else []
    # 1. the student alone: same seed, same epochs, its own loss and metrics
    alone = build_student()
    alone.compile(optimizer=make_optimizer(tr.optimizer, steps, tr.epochs),
                  loss=make_loss(tr.loss, "classification", ctx.num_outputs, one_hot),
                  metrics=make_metrics(tr.metrics, "classification"))
    seed_everything(student.seed, tr.deterministic)
    alone_ds = make_dataset(x_train, labels(y_train), tr.batch_size, training=True, seed=student.seed)
    alone_val = make_dataset(val[0], labels(val[1]), tr.batch_size, training=False) if val else None
    alone.fit(alone_ds, validation_data=alone_val, epochs=tr.epochs, verbose=0, shuffle=False, callbacks=progress_cb)
    alone_metrics = evaluate(alone)

    # 2. the same student, distilled
    model = build_student()
    distiller = keras.distillation.Distiller(
        teacher=_log_view(teacher), student=_log_view(model),
        # loss given as an instance: with the default string "kl_divergence", Keras 3.15 resolves a
        # function, skips the softmax of the tempered logits, and the loss is silently ~0
        distillation_losses=keras.distillation.LogitsDistillation(temperature=temperature,
                                                                  loss=keras.losses.KLDivergence()),
        student_loss_weight=1.0 - alpha)
    distiller.compile(optimizer=make_optimizer(tr.optimizer, steps, tr.epochs),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    distiller.fit(train_ds, validation_data=val_ds, epochs=tr.epochs, verbose=0, shuffle=False,
                  callbacks=[*progress_cb, cb.HistoryCSV(out / "history.csv")])
    distilled_metrics = evaluate(model)
    teacher_metrics = evaluate(teacher_run.load_model())

    cb.save_model_atomic(model, out / "model.keras")
    write_json(out / "metrics.json", distilled_metrics)
    for name in ("preprocessing.json", "labels.txt"):
        if (teacher_run.path / name).exists():
            copy_file(teacher_run.path / name, out / name)
    # the distilled run's recipe: the student on the teacher's data, with the settings used
    from dlcli.recipe.schema import DistillSpec

    used = DistillSpec(student=None, temperature=temperature, alpha=alpha)
    distilled_recipe = student.model_copy(update={
        "data": teacher_run.recipe.data, "compress": student.compress.model_copy(update={"distill": used})})
    write_text(out / "recipe.yaml", recipe_to_yaml(distilled_recipe))
    params = {"teacher": int(teacher.count_params()), "student": int(model.count_params())}
    result = DistillResult(out, teacher_metrics, alone_metrics, distilled_metrics, temperature, alpha, params,
                           time.time() - t0)
    write_json(out / "distill.json", {**result.to_json(), "teacher_run": str(teacher_run.path.resolve())})
    env = dict(teacher_run.env)
    env.update(environment())
    env.update(status="completed", distilled_from=str(teacher_run.path.resolve()), seed=student.seed,
               recipe_hash=recipe_hash(distilled_recipe), parameters=params["student"],
               ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json(out / "env.json", env)
    return result
