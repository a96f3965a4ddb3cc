"""The recipe, version 1: ``name``, ``seed``, ``task``, ``data``, ``model``, ``train``,
the ``export`` / ``compress`` sections that later stages read, ``tracking`` and ``tune``."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal, get_args

from pydantic import Field, PrivateAttr, model_validator

from dlcli.recipe.base import StrictModel
from dlcli.recipe.data import DataSpec
from dlcli.recipe.model import ModelSpec
from dlcli.recipe.train import TrainSpec
from dlcli.recipe.tune import TrackingSpec, TuneSpec


class GateSpec(StrictModel):
    """Parity-gate thresholds; null means the default for the format and quantization.

    Defaults: float32 (SavedModel, ONNX, TFLite) max abs error 1e-4; float16 1e-2;
    dynamic-range and int8: top-1 agreement >= 0.98 and a metric drop of at most 0.01
    (accuracy points for classification; relative increase of MAE otherwise).
    """

    max_abs_error: float | None = Field(None, gt=0, description="Largest allowed |artifact - Keras| over all outputs.")
    min_top1_agreement: float | None = Field(None, ge=0, le=1, description="Least fraction of test samples with the same top-1 class (classification).")
    max_metric_drop: float | None = Field(None, ge=0, description="Largest allowed drop of the test metric against the Keras model.")


QuantizeMode = Literal["none", "dynamic", "float16", "int8", "int16x8"]
QUANTIZE_MODES: tuple[str, ...] = get_args(QuantizeMode)
CALIBRATED = ("int8", "int16x8")  # the modes that need representative data
OnnxQuantizeMode = Literal["none", "int8", "dynamic"]
ONNX_QUANTIZE_MODES: tuple[str, ...] = get_args(OnnxQuantizeMode)
OnnxCalibration = Literal["minmax", "entropy", "percentile"]
ONNX_CALIBRATIONS: tuple[str, ...] = get_args(OnnxCalibration)


class FallbackMode(str, Enum):
    """``--fallback``: what an int8 TFLite file that fails its gate may do."""

    none = "none"
    auto = "auto"


class DeviceLimits(StrictModel):
    """The device a model must fit (``dlcli validate --target mcu`` checks it before training)."""

    flash_kb: int | None = Field(None, ge=1, le=1 << 30, description="Flash for the model file, in KiB.")
    ram_kb: int | None = Field(None, ge=1, le=1 << 30, description="RAM for TFLite Micro's tensor arena, in KiB.")


class ExportSpec(StrictModel):
    """Defaults for ``dlcli export``; command-line flags override them."""

    target: DeviceLimits = Field(default_factory=DeviceLimits, description="Device limits checked by "
                                 "dlcli validate --target mcu (flash_kb, ram_kb).")

    formats: list[Literal["saved_model", "tflite", "onnx"]] = Field(
        default_factory=list, description="Formats written when the command names none (empty: all three)."
    )
    quantize: QuantizeMode = Field(
        "none", description="TFLite quantization (a float32 TFLite is also written as the size reference); "
        "int16x8: 16-bit activations, 8-bit weights."
    )
    representative_samples: int = Field(200, ge=1, description="Training examples that calibrate int8 quantization.")
    explain: bool = Field(False, description="int8 TFLite: measure every layer's quantization error (TFLite's "
                          "QuantizationDebugger: rmse in quantization steps); int8 ONNX: every tensor's SQNR "
                          "(onnxruntime's QDQ debugging); into the manifest and the report.")
    fallback: Literal[tuple(m.value for m in FallbackMode)] = Field(  # type: ignore[valid-type]
        "none", description="int8 TFLite or ONNX that fails its gate: auto keeps the worst layers (ONNX: nodes) in "
        "float, one at a time, until the gate passes or fallback_budget are in float (a TFLite file then takes float "
        "input).")
    fallback_budget: int = Field(5, ge=1, le=1000, description="Most layers --fallback auto may keep in float.")
    int8_float_fallback: bool = Field(False, description="Let ops without an int8 kernel run in float (int8 I/O kept where possible).")
    int8_per_channel: bool = Field(
        True, description="Per-channel int8 weight scales (more accurate); false: per-tensor (smaller file)."
    )
    opset: int | None = Field(None, ge=9, description="ONNX opset (default: Keras's choice).")
    onnx_quantize: OnnxQuantizeMode = Field(
        "none", description="ONNX quantization: int8 also writes model_int8.onnx, statically quantized by "
        "onnxruntime (QDQ, per-channel int8 weights, int8 activations); dynamic writes model_dynamic.onnx "
        "(int8 weights, activations quantized at run time, no calibration)."
    )
    onnx_calibration: OnnxCalibration = Field(
        "minmax", description="ONNX int8: how onnxruntime calibrates activation ranges on the representative rows."
    )
    tflite_batch_size: int | Literal["auto", "dynamic"] = Field(
        "auto", description="TFLite batch dimension: auto = 1 for recurrent models (builtin ops only), dynamic otherwise."
    )
    parity_samples: int = Field(1000, ge=1, description="Test examples (at most) run through every artifact by the parity gate.")
    gate: GateSpec = Field(default_factory=GateSpec, description="Parity-gate thresholds.")
    include_preprocessing: bool = Field(
        False, description="Bake the fitted reshape and normalization into the exported models: a device feeds "
        "raw feature values (the parity gate does too). Default: they stay in preprocessing.json."
    )


class PruneSpec(StrictModel):
    """Magnitude pruning (``dlcli prune``): fine-tune while the smallest weights are masked."""

    sparsity: float = Field(0.8, ge=0.0, lt=1.0, description="Target fraction of zeros in each prunable kernel.")
    schedule: Literal["constant", "polynomial"] = Field(
        "polynomial", description="constant: target from the first step; polynomial: rise from initial_sparsity (Zhu & Gupta)."
    )
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="Sparsity at the first step (polynomial).")
    end_fraction: float = Field(0.7, gt=0.0, le=1.0, description="Fraction of the fine-tuning steps after which the target is reached.")
    frequency: int = Field(10, ge=1, description="Steps between mask updates (masks are re-applied after every step).")
    structure: Literal["unstructured", "2:4"] = Field(
        "unstructured", description="2:4: at most 2 non-zeros in every group of 4 consecutive weights along the input axis."
    )
    scope: Literal["layer", "global"] = Field(
        "global", description="global: one magnitude threshold across the pruned kernels (fewer zeros where weights matter more); layer: the target sparsity in every kernel."
    )
    epochs: int = Field(10, ge=1, description="Fine-tuning epochs.")
    learning_rate: float | None = Field(None, gt=0, description="Fine-tuning rate (default: a third of the training rate).")
    exclude: list[str] = Field(default_factory=list, description="Layer names to leave dense.")
    min_size: int = Field(1024, ge=0, description="Kernels with fewer weights stay dense: they save little and "
                          "cost the most accuracy (0: prune every kernel).")
    keep_first_conv: bool = Field(True, description="Leave the first convolution dense (it sees the raw input "
                                  "and holds few weights).")


class DistillSpec(StrictModel):
    """Knowledge distillation (``dlcli distill`` and the train pipeline)."""

    student: str | None = Field(None, description="Student recipe file (pipeline: required; relative to this recipe).")
    temperature: float = Field(3.0, gt=0, description="Softmax temperature for the teacher's and student's logits.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the distillation loss; 1 - alpha weighs the label loss.")


class QatSpec(StrictModel):
    """Quantization-aware training (``dlcli qat``): fine-tune with int8 fake-quantization of
    the Dense / Conv / DepthwiseConv kernels and outputs, so the int8 export uses ranges learned
    in training."""

    epochs: int = Field(3, ge=1, description="Fine-tuning epochs.")
    learning_rate: float | None = Field(None, gt=0, description="Fine-tuning rate (default: a tenth of the training rate).")
    fold_batch_norm: bool = Field(True, description="Fold a BatchNormalization that follows a convolution or Dense "
                                  "layer into its kernel and bias first (as int8 TFLite runs it).")
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0, description="Decay of the moving min / max that tracks each "
                             "quantized output's range while training.")
    exclude: list[str] = Field(default_factory=list, description="Layer names to leave in float (not fake-quantized).")
    per_channel: bool = Field(True, description="Conv2D / DepthwiseConv2D kernels with one scale per output channel "
                              "(the int8 export's default); false trains for `--int8-per-tensor` (Dense and Conv1D "
                              "are per tensor either way).")


class CompressSpec(StrictModel):
    """Compression stages, run by ``dlcli train`` after training (distill, then prune, then
    quantization-aware training), before export."""

    prune: PruneSpec | None = Field(None, description="Magnitude pruning settings.")
    distill: DistillSpec | None = Field(None, description="Knowledge distillation settings.")
    qat: QatSpec | None = Field(None, description="Quantization-aware training settings (export it with "
                                "`--quantize int8`).")

    def qat_spec(self) -> QatSpec:
        return self.qat or QatSpec()

    def prune_spec(self) -> PruneSpec:
        return self.prune or PruneSpec()


class AnomalySpec(StrictModel):
    """Anomaly detection by reconstruction error (task: reconstruction): after training, the
    threshold is calibrated on the validation split; ``dlcli predict`` flags examples above
    it and ``dlcli evaluate`` scores the flags against labels that mark anomalies."""

    normal_classes: list[int | str] | None = Field(
        None, description="Label values of normal examples: the training and validation splits keep only these; "
        "the test split keeps every example, and its other labels mark anomalies (needs data.label_column).")
    percentile: float | None = Field(None, gt=0, lt=100, description="Threshold: this percentile of the validation "
                                     "split's errors (default 99 unless false_positive_rate is set).")
    false_positive_rate: float | None = Field(None, gt=0, lt=1, description="Threshold: the error that this "
                                              "fraction of normal validation examples exceeds.")
    score: Literal["mse", "mae"] = Field("mse", description="Reconstruction error per example.")

    @model_validator(mode="after")
    def _one_rule(self):
        if self.percentile is not None and self.false_positive_rate is not None:
            raise ValueError("give percentile or false_positive_rate, not both")
        return self

    def threshold_percentile(self) -> float:
        if self.false_positive_rate is not None:
            return 100.0 * (1.0 - self.false_positive_rate)
        return 99.0 if self.percentile is None else self.percentile


class Recipe(StrictModel):
    version: Literal[1] = Field(1, description="Recipe schema version.")
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="Run name (letters, digits, _ . -).")
    description: str = Field("", description="Free text.")
    seed: int = Field(42, ge=0, description="Seed for splits, initialisation, shuffling and dropout.")
    task: Literal["classification", "regression", "reconstruction", "gan"] = Field(
        "classification", description="What the labels are: class ids, numbers, or the input itself; gan: "
        "generate examples like the data (model: gan; labels, when given, are class ids)."
    )
    data: DataSpec = Field(..., description="Where the data comes from and how it is prepared.")
    model: ModelSpec = Field(..., description="The model: architecture, layers, graph, application or code.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="How to train.")
    export: ExportSpec = Field(default_factory=ExportSpec, description="Export defaults.")
    compress: CompressSpec = Field(default_factory=CompressSpec, description="Compression stages.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="Experiment tracking (MLflow).")
    tune: TuneSpec | None = Field(None, description="Hyperparameter search for dlcli tune (dlcli train ignores it).")
    anomaly: AnomalySpec | None = Field(None, description="Anomaly detection by reconstruction error "
                                        "(task: reconstruction).")

    _source: Any = PrivateAttr(None)
    _base_dir: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _cross(self):
        arch = getattr(self.model, "architecture", None)
        if self.anomaly is not None and self.task != "reconstruction":
            raise ValueError(f"anomaly needs task: reconstruction (an autoencoder or a VAE), not {self.task}")
        if (self.task == "gan") != hasattr(self.model, "gan"):
            raise ValueError("task: gan and model: {gan: ...} go together" if self.task == "gan"
                             else f"model.gan needs task: gan (the recipe says task: {self.task})")
        if arch in ("autoencoder", "vae") and self.task != "reconstruction":
            raise ValueError(f"model.architecture {arch} needs task: reconstruction")
        if self.task == "reconstruction" and self.train.loss.name in (
            "sparse_categorical_crossentropy", "categorical_crossentropy"
        ):
            raise ValueError("task reconstruction cannot use a categorical cross-entropy loss")
        return self


def json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dlcli recipe (version 1)"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2)
