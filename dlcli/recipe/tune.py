"""The ``tune:`` section (``dlcli tune``: an Optuna search over dotted recipe keys) and the
``tracking:`` section (MLflow). Neither changes what ``dlcli train`` trains."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from dlcli.recipe.base import StrictModel

# what an exported trial costs on a device, measured by dlcli itself (int8 TFLite, batch 1)
COSTS = {
    "int8_latency_ms": "minimize",  # native p50 through LiteRT's CompiledModel, 1 thread
    "int8_size_kb": "minimize",  # the int8 .tflite file
    "parameters": "minimize",  # the trained Keras model's weights
}
HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou")


def direction_of(name: str) -> str:
    if name in COSTS:
        return COSTS[name]
    return "maximize" if any(k in name for k in HIGHER_IS_BETTER) else "minimize"


class _Param(StrictModel):
    when: dict[str, Any] = Field(default_factory=dict, description="Conditional key: sampled only when these "
                                 "keys (earlier in the space) took these values; otherwise the recipe's value stays.")


class FloatParam(_Param):
    type: Literal["float"]
    low: float = Field(..., description="Smallest value.")
    high: float = Field(..., description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale (learning rates, weight decay).")
    step: float | None = Field(None, gt=0, description="Discretization step (not with log).")

    @model_validator(mode="after")
    def _range(self):
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class IntParam(_Param):
    type: Literal["int"]
    low: int = Field(..., description="Smallest value.")
    high: int = Field(..., description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale.")
    step: int = Field(1, ge=1, description="Step between values (not with log).")

    @model_validator(mode="after")
    def _range(self):
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined")
        return self


class ChoiceParam(_Param):
    type: Literal["choice"]
    values: list[Any] = Field(..., min_length=1, description="The values to choose from (scalars, lists or mappings).")


def _check_range(low, high, log: bool) -> None:
    if high <= low:
        raise ValueError(f"empty range: high ({high}) must be greater than low ({low})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0 (got {low})")


Param = Annotated[FloatParam | IntParam | ChoiceParam, Field(discriminator="type")]


class Objective(StrictModel):
    name: str = Field(..., min_length=1, description="A validation metric of the recipe (accuracy, loss, mae, ...) "
                      "or a measured cost: " + ", ".join(COSTS) + ".")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="auto: maximize accuracy-like metrics, minimize losses, errors and costs.")

    def resolved_direction(self) -> str:
        return direction_of(self.name) if self.direction == "auto" else self.direction


class TuneSpec(StrictModel):
    """``dlcli tune``: an Optuna study (SQLite, resumable, parallel) over recipe keys."""

    space: dict[str, Param] = Field(default_factory=dict, description="Dotted recipe key -> what to sample, e.g. "
                                    "train.optimizer.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}.")
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(name="auto")], min_length=1, max_length=3,
        description="What to optimize: one (a single best trial) or more (a Pareto front), e.g. "
        "[accuracy, int8_latency_ms]. auto: the first metric of train.metrics.")
    trials: int = Field(20, ge=1, le=100000, description="Trials in the study (a resumed study counts those it holds).")
    timeout_minutes: float | None = Field(None, gt=0, description="Stop starting new trials after this long.")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler (TPE handles several objectives).")
    pruner: Literal["median", "none"] = Field(
        "median", description="Stop a trial whose validation metric falls below the median of earlier trials at "
        "the same epoch (single objective only).")
    startup_trials: int = Field(5, ge=0, description="Trials sampled at random before TPE and the pruner act.")

    @field_validator("objectives", mode="before")
    @classmethod
    def _names(cls, value):
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("space")
    @classmethod
    def _keys(cls, value: dict[str, Any]):
        for key in value:
            if not key or any(not part for part in key.split(".")) or key.split(".")[0] in ("tune", "tracking"):
                raise ValueError(f"{key!r} is not a dotted recipe key (e.g. train.batch_size)")
        return value


class TrackingSpec(StrictModel):
    """Experiment tracking from dlcli's own loop (TensorBoard logs are written regardless)."""

    backend: Literal["none", "mlflow"] = Field("none", description="mlflow: log params, per-epoch metrics, the model, "
                                               "the export manifest and artifacts, benchmark and report.")
    uri: str | None = Field(None, description="Tracking URI (default: the MLFLOW_TRACKING_URI environment variable).")
    experiment: str | None = Field(None, description="Experiment name (default: MLFLOW_EXPERIMENT_NAME, else the "
                                   "recipe name).")
    run_name: str | None = Field(None, description="Run name (default: the run directory's name).")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags set on every run.")
    log_model: bool = Field(True, description="Log model.keras as an artifact.")
    log_artifacts: bool = Field(True, description="Log the export manifest, the exported files, benchmark.json "
                                "and the report.")
    required: bool = Field(False, description="An unreachable tracker stops the command (exit 11) instead of a "
                           "warning (training goes on; `dlcli track RUN` logs the run later).")
