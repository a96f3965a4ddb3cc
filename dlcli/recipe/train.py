"""The ``train:`` section: optimizer, schedule, loss, metrics, callbacks, precision."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from dlcli.recipe.base import StrictModel

# recipe name -> keras.optimizers class: the one list (the schema's choices, the optimizer factory)
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad",
              "adadelta": "Adadelta", "adamax": "Adamax", "nadam": "Nadam", "lion": "Lion", "ftrl": "Ftrl",
              "lamb": "Lamb"}
WARMUP_SCHEDULES = ("cosine", "constant")  # the schedules a linear warm-up can precede
LOSSES = [
    "auto", "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
    "mse", "mean_squared_error", "mae", "mean_absolute_error", "huber", "log_cosh", "kl_divergence",
]


class _Schedule(StrictModel):
    initial: float = Field(..., gt=0, description="Learning rate at the start (after warm-up).")
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up from 0 over this many epochs (cosine and constant only).")


class ConstantSchedule(_Schedule):
    schedule: Literal["constant"]


class CosineSchedule(_Schedule):
    """Cosine decay over the whole run (after warm-up) down to ``alpha * initial``."""

    schedule: Literal["cosine"]
    alpha: float = Field(0.0, ge=0, le=1, description="Final learning rate as a fraction of initial.")


class ExponentialSchedule(_Schedule):
    schedule: Literal["exponential"]
    decay_rate: float = Field(0.9, gt=0, le=1, description="Multiply the rate by this every decay_epochs.")
    decay_epochs: float = Field(1.0, gt=0, description="Epochs per decay step.")
    staircase: bool = Field(False, description="Decay in steps rather than continuously.")


class StepSchedule(_Schedule):
    schedule: Literal["step"]
    boundaries: list[int] = Field(..., min_length=1, description="Epochs at which the rate is multiplied by factor.")
    factor: float = Field(0.1, gt=0, description="Multiplier at each boundary.")


Schedule = Annotated[
    ConstantSchedule | CosineSchedule | ExponentialSchedule | StepSchedule, Field(discriminator="schedule")
]


class OptimizerSpec(StrictModel):
    name: Literal[tuple(OPTIMIZERS)] = Field("adam", description="Optimizer: " + ", ".join(OPTIMIZERS) + ".")  # type: ignore[valid-type]
    learning_rate: Annotated[float, Field(gt=0)] | Schedule = Field(1e-3, description="A number, or a schedule mapping (cosine, exponential, step, constant).")
    momentum: float | None = Field(None, ge=0, lt=1, description="SGD / RMSprop momentum.")
    nesterov: bool | None = Field(None, description="Nesterov momentum (SGD).")
    weight_decay: float | None = Field(None, ge=0, description="Decoupled weight decay (AdamW, Lion, and others that accept it).")
    beta_1: float | None = Field(None, gt=0, lt=1, description="Adam-family first moment decay.")
    beta_2: float | None = Field(None, gt=0, lt=1, description="Adam-family second moment decay.")
    epsilon: float | None = Field(None, gt=0, description="Numerical stability term.")
    clipnorm: float | None = Field(None, gt=0, description="Clip each gradient to this norm.")
    global_clipnorm: float | None = Field(None, gt=0, description="Clip all gradients to this global norm.")
    use_ema: bool = Field(False, description="Keep an exponential moving average of weights.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _warmup(self):
        lr = self.learning_rate
        if not isinstance(lr, float) and lr.warmup_epochs and lr.schedule not in WARMUP_SCHEDULES:
            raise ValueError(f"learning_rate.warmup_epochs works with the cosine and constant schedules, "
                             f"not {lr.schedule}")
        return self

    @model_validator(mode="after")
    def _applies(self):
        if self.momentum is not None and self.name not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to sgd and rmsprop, not {self.name}")
        if self.nesterov is not None and self.name != "sgd":
            raise ValueError(f"nesterov applies to sgd, not {self.name}")
        if (self.beta_1 is not None or self.beta_2 is not None) and self.name not in (
            "adam", "adamw", "adamax", "nadam", "lion", "lamb"
        ):
            raise ValueError(f"beta_1 / beta_2 apply to the Adam family and Lion, not {self.name}")
        if self.clipnorm and self.global_clipnorm:
            raise ValueError("set clipnorm or global_clipnorm, not both")
        return self


class LossSpec(StrictModel):
    name: Literal[tuple(LOSSES)] = Field("auto", description="Loss; auto: sparse categorical cross-entropy for classification, MSE otherwise.")  # type: ignore[valid-type]
    from_logits: bool = Field(False, description="Outputs are logits (the model has no softmax/sigmoid).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing (categorical / binary cross-entropy).")
    delta: float = Field(1.0, gt=0, description="Huber loss delta.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class EarlyStoppingSpec(StrictModel):
    monitor: str = Field("val_loss", description="Quantity to watch.")
    patience: int = Field(5, ge=0, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")
    mode: Literal["auto", "min", "max"] = Field("auto", description="Whether lower or higher is better.")
    restore_best_weights: bool = Field(True, description="End with the best epoch's weights.")


class CheckpointSpec(StrictModel):
    """checkpoints/best.keras, and when resumable checkpoints are written.

    The resumable checkpoint (checkpoints/resume/, with checkpoints/last.keras) is written
    when ``min_interval_seconds`` have passed since the last write (checked between
    executions of ``steps_per_execution`` steps, so also within an epoch), on SIGTERM/SIGINT,
    and when training ends; the files are written by a background thread while training
    goes on. A finite epoch that is not written is kept on the device, so after a NaN
    loss the last finite epoch is written.
    """

    monitor: str = Field("val_loss", description="Quantity that picks the best epoch.")
    mode: Literal["auto", "min", "max"] = Field("auto", description="Whether lower or higher is better.")
    min_interval_seconds: float = Field(
        30.0, ge=0, description="Least time between checkpoint writes during training, checked after every "
        "step (0: at every epoch end, never within an epoch)."
    )


class ReduceLROnPlateauSpec(StrictModel):
    monitor: str = Field("val_loss", description="Quantity to watch.")
    factor: float = Field(0.5, gt=0, lt=1, description="Multiply the rate by this on a plateau.")
    patience: int = Field(3, ge=0, description="Epochs without improvement before reducing.")
    min_lr: float = Field(0.0, ge=0, description="Lower bound.")


class CallbacksSpec(StrictModel):
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when the monitored value stops improving.")
    checkpoint: CheckpointSpec | None = Field(
        default_factory=CheckpointSpec, description="Checkpoint timing and checkpoints/best.keras (best epoch); "
        "null: no best.keras, resumable checkpoints every 30 s."
    )
    reduce_lr_on_plateau: ReduceLROnPlateauSpec | None = Field(None, description="Reduce the rate on a plateau (needs a numeric learning_rate).")
    tensorboard: bool = Field(True, description="Write TensorBoard logs to RUN_DIR/tensorboard.")
    csv_history: bool = Field(True, description="Write RUN_DIR/history.csv.")
    terminate_on_nan: bool = Field(True, description="Stop at the first NaN/inf loss (exit code 4).")


class TrainSpec(StrictModel):
    epochs: int = Field(10, ge=1, le=1_000_000, description="Maximum epochs.")
    batch_size: int = Field(32, ge=1, le=1 << 20, description="Global batch size.")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer (string shorthand: `adam`).")
    loss: LossSpec = Field(default_factory=LossSpec, description="Loss (string shorthand: `mse`).")
    metrics: list[str] = Field(["auto"], description="Keras metric names; auto: accuracy for classification, mae otherwise.")
    callbacks: CallbacksSpec = Field(default_factory=CallbacksSpec, description="Callbacks.")
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = Field("none", description="Keras dtype policy.")
    jit_compile: bool | Literal["auto"] = Field(False, description="XLA compilation (auto lets Keras decide).")
    deterministic: bool = Field(True, description="Enable TensorFlow op determinism (same seed, same result).")
    steps_per_epoch: int | None = Field(None, ge=1, description="Limit steps per epoch (default: the whole training split).")
    steps_per_execution: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Training steps run in one compiled call (logs, callbacks, signals and checkpoints are "
        "seen between calls). auto: enough steps for about 200 ms per call, at most 64 and one epoch.")
    strategy: Literal["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"] = Field(
        "auto", description="tf.distribute strategy; auto: TPU if configured, multi-worker if TF_CONFIG / SLURM "
        "describe several workers, mirrored with several GPUs, else default."
    )
    tpu: str | None = Field(None, description="TPU name or grpc:// address for the tpu strategy.")
    scale_learning_rate: bool = Field(False, description="Multiply the learning rate by the number of replicas.")
    cpu_devices: int | None = Field(None, ge=1, description="Split the CPU into this many logical devices "
                                    "(mirrored training without GPUs, as Keras's own tests do).")
    worker_timeout_seconds: float = Field(
        300.0, gt=0, description="Multi-worker: longest wait for the other workers in one collective step; "
        "past it, a worker that died or hangs stops every worker with exit code 9.")

    @model_validator(mode="after")
    def _smoothing(self):
        if self.loss.label_smoothing and self.loss.name in ("auto", "sparse_categorical_crossentropy"):
            raise ValueError("loss.label_smoothing needs categorical_crossentropy or binary_crossentropy "
                             f"(not {self.loss.name})")
        return self

    @model_validator(mode="after")
    def _xla(self):
        if self.jit_compile is True and self.deterministic:
            raise ValueError("jit_compile: true needs deterministic: false (TensorFlow turns XLA off "
                             "while op determinism is enabled)")
        return self

    @model_validator(mode="after")
    def _lr_plateau(self):
        if self.callbacks.reduce_lr_on_plateau and not isinstance(self.optimizer.learning_rate, float):
            raise ValueError("reduce_lr_on_plateau needs a numeric optimizer.learning_rate, not a schedule")
        return self
