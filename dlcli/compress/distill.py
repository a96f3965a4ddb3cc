"""``distill(teacher_run, student_recipe) -> DistillResult`` with ``keras.distillation``.

The student is trained on the teacher run's data, through the teacher's saved
preprocessing (the student recipe provides the model and the training settings), twice
with the same seed, initial weights and epochs, both through the one trainer: distilled
from the teacher (OUT/), and alone (OUT/student-alone/). The result reports both beside
the teacher. Classification only: the losses compare class distributions.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.atomic import write_json
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
    weights_sha256: str = ""  # the distilled student's

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "teacher": self.teacher, "student_alone": self.student_alone,
                "distilled": self.distilled, "temperature": self.temperature, "alpha": self.alpha,
                "parameters": self.parameters, "duration_s": round(self.duration_s, 3),
                "weights_sha256": self.weights_sha256}


def _log_view(model):
    """The same model (shared weights) with log-probabilities as outputs: logits for the losses."""
    import keras

    logits = keras.ops.log(keras.ops.clip(model.outputs[0], 1e-7, 1.0))
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def distill(teacher_run: str | Path, student_recipe, out_dir: str | Path | None = None, *,
            temperature: float | None = None, alpha: float | None = None, overwrite: bool = False,
            allow_code: bool = False, progress: str = "plain", console=None, reuse: bool = False,
            log=None) -> DistillResult:
    """Distill ``teacher_run`` into the student of ``student_recipe`` (into ``out_dir``), then
    train the same student alone (into ``out_dir/student-alone``), both through the one
    trainer from the same seed and initial weights. A rerun after a kill resumes the
    unfinished stage."""
    from dlcli.recipe.loader import load_recipe
    from dlcli.recipe.overrides import apply_overrides
    from dlcli.recipe.schema import DistillSpec
    from dlcli.rundir import open_run
    from dlcli.train.trainer import run_stage

    t0 = time.time()
    teacher_run = open_run(teacher_run)
    student = load_recipe(student_recipe) if isinstance(student_recipe, (str, Path)) else student_recipe
    spec = student.compress.distill or teacher_run.recipe.compress.distill or DistillSpec()
    used = apply_overrides(spec, {"temperature": temperature, "alpha": alpha}).model_copy(update={"student": None})
    temperature, alpha = used.temperature, used.alpha
    if teacher_run.recipe.task != "classification" or student.task != "classification":
        raise UsageError("distillation needs classification teacher and student (task: classification)")
    out = Path(out_dir) if out_dir else teacher_run.path.parent / f"{student.name}-distilled"
    # the student on the teacher's data, with the settings used
    alone = student.model_copy(update={"data": teacher_run.recipe.data})
    distilled_recipe = alone.model_copy(update={"compress": student.compress.model_copy(update={"distill": used})})
    unfinished = reuse or not (out / "distill.json").exists()
    stages = _Stages(teacher_run, allow_code, temperature, alpha)
    res = run_stage(stages.distilled(distilled_recipe), out, overwrite=overwrite, reuse=unfinished,
                    progress=progress, console=console, log=log)
    base = run_stage(stages.alone(alone), out / "student-alone", reuse=True, progress=progress, console=console,
                     log=log)
    teacher_metrics = json.loads((teacher_run.path / "metrics.json").read_text(encoding="utf-8"))
    result = DistillResult(out, teacher_metrics, base.metrics, res.metrics, temperature, alpha, stages.parameters(out),
                           time.time() - t0, res.weights_digest)
    if res.chief:
        write_json(out / "distill.json", {**result.to_json(), "teacher_run": str(teacher_run.path.resolve())})
    return result


class _Stages:
    """The distilled student and the student alone, as stages of the one trainer. Both
    build the student first after the same seed, so they start from the same weights."""

    def __init__(self, teacher_run, allow_code: bool, temperature: float, alpha: float):
        self.teacher_run, self.allow_code = teacher_run, allow_code
        self.temperature, self.alpha = temperature, alpha
        self.env = {"distilled_from": str(teacher_run.path.resolve())}

    def _student(self, recipe, ctx, steps: int, replicas: int):
        from dlcli.models import build_model
        from dlcli.train.stage import compile_like_recipe, scaled_optimizer

        model = build_model(recipe, ctx, allow_code=self.allow_code)
        teacher = self.teacher_run.load_model()
        t_shape, s_shape = tuple(teacher.outputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])
        if t_shape != s_shape:
            raise ShapeMismatchError(
                f"the student's output shape {(None, *s_shape)} differs from the teacher's {(None, *t_shape)}")
        # compiled with the recipe's optimizer (built), so the saved model reloads without warnings
        compile_like_recipe(model, recipe, ctx, steps, scaled_optimizer(recipe.train, replicas))
        model.optimizer.build(model.trainable_variables)
        return model, teacher

    def alone(self, recipe):
        from dlcli.train.stage import Stage, Trainable

        def build(ctx, steps: int, replicas: int) -> Trainable:
            return Trainable(self._student(recipe, ctx, steps, replicas)[0])

        return Stage("student-alone", recipe, build, preprocessor=self.teacher_run.preprocessor, env=self.env)

    def distilled(self, recipe):
        from dlcli.train.stage import Stage, Trainable

        def build(ctx, steps: int, replicas: int) -> Trainable:
            import keras

            from dlcli.train.optim import make_optimizer, needs_one_hot
            from dlcli.train.stage import scaled_optimizer

            tr = recipe.train
            model, teacher = self._student(recipe, ctx, steps, replicas)
            teacher.trainable = False
            distiller = _WeightedDistiller(
                teacher=_log_view(teacher), student=_log_view(model),
                # loss given as an instance: with the default string "kl_divergence", Keras 3.15 resolves a
                # function, skips the softmax of the tempered logits, and the loss is silently ~0
                distillation_losses=keras.distillation.LogitsDistillation(temperature=self.temperature,
                                                                          loss=keras.losses.KLDivergence()),
                student_loss_weight=1.0 - self.alpha)
            one_hot = needs_one_hot(tr.loss, "classification", tr.metrics)
            loss = (keras.losses.CategoricalCrossentropy if one_hot else keras.losses.SparseCategoricalCrossentropy)
            accuracy = keras.metrics.CategoricalAccuracy if one_hot else keras.metrics.SparseCategoricalAccuracy
            distiller.compile(optimizer=make_optimizer(scaled_optimizer(tr, replicas), steps, tr.epochs),
                              loss=loss(from_logits=True), metrics=[accuracy(name="accuracy")],
                              jit_compile=tr.jit_compile)
            return Trainable(distiller, output=model)

        return Stage("distill", recipe, build, preprocessor=self.teacher_run.preprocessor, env=self.env,
                     best_checkpoint=False)

    def parameters(self, out: Path) -> dict[str, int]:
        from dlcli.rundir import load_keras_model

        return {"teacher": int(self.teacher_run.load_model().count_params()),
                "student": int(load_keras_model(out / "model.keras").count_params())}


def _weighted(loss, sample_weight):
    return lambda y, p: loss(y, p, sample_weight=sample_weight)


@functools.cache
def _make_weighted_distiller():
    import keras
    from keras import tree

    class WeightedDistiller(keras.distillation.Distiller):
        """Keras's Distiller, with sample (class) weights applied to the student's label
        loss (Keras 3.15 ignores them: "sample_weight: currently unused")."""

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            if sample_weight is None:
                return super().compute_loss(x, y, y_pred, None, training)
            plain = self._student_loss
            self._student_loss = tree.map_structure(lambda fn: _weighted(fn, sample_weight), plain)
            try:
                return super().compute_loss(x, y, y_pred, None, training)
            finally:
                self._student_loss = plain

    return WeightedDistiller


def _WeightedDistiller(**kwargs):  # a class, built on first use (keras imported lazily)
    return _make_weighted_distiller()(**kwargs)
