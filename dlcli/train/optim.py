"""Optimizer, learning-rate schedule, loss and metrics from the recipe."""

from __future__ import annotations

from dlcli.errors import RecipeError
from dlcli.recipe.train import OPTIMIZERS


def make_schedule(lr, steps_per_epoch: int, epochs: int):
    import keras

    if isinstance(lr, float):
        return lr
    warm = round(lr.warmup_epochs * steps_per_epoch)
    total = max(1, epochs * steps_per_epoch - warm)
    if lr.schedule == "constant":
        if not warm:
            return lr.initial
        return keras.optimizers.schedules.CosineDecay(0.0, total, alpha=1.0, warmup_target=lr.initial, warmup_steps=warm)
    if lr.schedule == "cosine":
        if warm:
            return keras.optimizers.schedules.CosineDecay(0.0, total, alpha=lr.alpha, warmup_target=lr.initial, warmup_steps=warm)
        return keras.optimizers.schedules.CosineDecay(lr.initial, total, alpha=lr.alpha)
    if lr.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            lr.initial, max(1, int(lr.decay_epochs * steps_per_epoch)), lr.decay_rate, staircase=lr.staircase
        )
    if lr.schedule == "step":
        bounds = [int(b * steps_per_epoch) for b in lr.boundaries]
        values = [lr.initial * lr.factor**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    raise RecipeError(f"train.optimizer.learning_rate: unknown schedule {lr.schedule!r}")  # pragma: no cover


def make_optimizer(spec, steps_per_epoch: int, epochs: int):
    import keras

    cls = getattr(keras.optimizers, OPTIMIZERS[spec.name])
    kwargs = {"learning_rate": make_schedule(spec.learning_rate, steps_per_epoch, epochs)}
    for key in ("momentum", "nesterov", "weight_decay", "beta_1", "beta_2", "epsilon", "clipnorm", "global_clipnorm"):
        value = getattr(spec, key)
        if value is not None:
            kwargs[key] = value
    if spec.use_ema:
        kwargs["use_ema"] = True
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"train.optimizer: {spec.name}: {exc}") from exc


def make_loss(spec, task: str, num_outputs: int, one_hot: bool = False):
    import keras

    name = spec.name
    if name == "auto":
        name = "sparse_categorical_crossentropy" if task == "classification" else "mse"
    if one_hot and name == "sparse_categorical_crossentropy":
        name = "categorical_crossentropy"  # same loss, on one-hot labels
    L = keras.losses
    if name == "sparse_categorical_crossentropy":
        if spec.label_smoothing:
            raise RecipeError("train.loss.label_smoothing: not supported by sparse_categorical_crossentropy; "
                              "use categorical_crossentropy")
        return L.SparseCategoricalCrossentropy(from_logits=spec.from_logits)
    if name == "categorical_crossentropy":
        # labels are one-hot encoded by the trainer (see needs_one_hot)
        return L.CategoricalCrossentropy(from_logits=spec.from_logits, label_smoothing=spec.label_smoothing)
    if name == "binary_crossentropy":
        return L.BinaryCrossentropy(from_logits=spec.from_logits, label_smoothing=spec.label_smoothing)
    if name in ("mse", "mean_squared_error"):
        return L.MeanSquaredError()
    if name in ("mae", "mean_absolute_error"):
        return L.MeanAbsoluteError()
    if name == "huber":
        return L.Huber(delta=spec.delta)
    if name == "log_cosh":
        return L.LogCosh()
    if name == "kl_divergence":
        return L.KLDivergence()
    raise RecipeError(f"train.loss.name: unknown loss {name!r}")  # pragma: no cover


# Metrics that compare per-class scores with labels of the same shape.
ONE_HOT_METRICS = {"auc", "precision", "recall", "f1_score", "fbeta_score", "categorical_accuracy",
                   "top_k_categorical_accuracy", "AUC", "Precision", "Recall", "F1Score"}


def needs_one_hot(spec, task: str, metrics: list[str] | None = None) -> bool:
    """Labels are fed one-hot for categorical cross-entropy and for per-class metrics."""
    if task != "classification":
        return False
    return spec.name == "categorical_crossentropy" or bool(set(metrics or []) & ONE_HOT_METRICS)


def make_metrics(names: list[str], task: str) -> list:
    import keras

    from dlcli.recipe.base import closest

    known = sorted({"accuracy", "acc", "crossentropy", "auc", "mae", "mse", "rmse"}
                   | {n for n in dir(keras.metrics) if not n.startswith("_") and n not in ("get", "serialize",
                                                                                         "deserialize")})
    out = []
    for i, name in enumerate(names):
        if name == "auto":
            out.append("accuracy" if task == "classification" else "mae")
            continue
        if name == "rmse":
            out.append(keras.metrics.RootMeanSquaredError(name="rmse"))
            continue
        if name not in ("accuracy", "acc", "crossentropy", "auc"):
            try:
                keras.metrics.get(name)
            except (ValueError, TypeError) as exc:
                hint = closest(name, known)
                extra = f", did you mean {hint!r}?" if hint else ""
                raise RecipeError(f"train.metrics.{i}: unknown Keras metric {name!r}{extra}") from exc
        out.append(keras.metrics.AUC(name="auc") if name == "auc" else name)
    return out
