"""The ``data:`` section: one spec per source, discriminated by ``source``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from dlcli.recipe.base import Pixels, StrictModel, Width


class SplitSpec(StrictModel):
    """How the training file is divided when no separate paths are given."""

    validation: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction held out for validation.")
    test: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction held out for the test split.")
    stratify: bool = Field(True, description="Keep class proportions in every split (classification, method random).")
    method: Literal["random", "hash"] = Field(
        "random", description="random: a seeded shuffle of the examples. hash: each example goes to a split by a "
        "stable hash of its key (file path relative to `path`, else row index) and the seed, so adding data "
        "never moves an example to another split (not stratified)."
    )

    @model_validator(mode="after")
    def _sum(self):
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must leave something to train on (sum < 1)")
        return self


class NormalizeSpec(StrictModel):
    """Input normalization, fitted on the training split only."""

    method: Literal["none", "standard", "minmax", "rescale"] = Field(
        "none", description="standard: (x-mean)/std; minmax: to [0,1]; rescale: x*scale+offset."
    )
    axis: Literal["feature", "channel", "global"] = Field(
        "feature", description="Statistics per feature, per last-axis channel, or one for all."
    )
    scale: float = Field(1.0, description="Multiplier for method=rescale (e.g. 1/255).")
    offset: float = Field(0.0, description="Added after scaling for method=rescale.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"method": data} if isinstance(data, str) else data


class AugmentSpec(StrictModel):
    """Random augmentation, applied in the training input pipeline only (never exported)."""

    flip: Literal["none", "horizontal", "vertical", "both"] = Field("none", description="Random flips (images).")
    rotation: float = Field(0.0, ge=0.0, le=1.0, description="Max rotation as a fraction of a full turn (images).")
    zoom: float = Field(0.0, ge=0.0, lt=1.0, description="Max zoom in or out as a fraction (images).")
    translation: float = Field(0.0, ge=0.0, lt=1.0, description="Max shift as a fraction of size (images).")
    contrast: float = Field(0.0, ge=0.0, lt=1.0, description="Max contrast change factor (images).")
    brightness: float = Field(0.0, ge=0.0, lt=1.0, description="Max brightness change factor (images).")
    noise: float = Field(0.0, ge=0.0, description="Std of Gaussian noise added to inputs (any numeric data).")

    def enabled(self) -> bool:
        return any(
            [self.flip != "none", self.rotation, self.zoom, self.translation, self.contrast,
             self.brightness, self.noise]
        )


class PipelineSpec(StrictModel):
    """tf.data input pipeline settings."""

    shuffle_buffer: int = Field(10000, ge=0, description="Shuffle buffer (0 disables shuffling).")
    cache: bool = Field(True, description="In-memory sources: cache the tensors in tf.data (false: no cache). "
                        "Streamed sources use `data.cache`.")
    prefetch: bool = Field(True, description="Prefetch batches (AUTOTUNE).")


class _DataCommon(StrictModel):
    path: str = Field(..., description="Training data file or folder, relative to the recipe file.")
    validation_path: str | None = Field(None, description="Separate validation data (skips the fraction split).")
    test_path: str | None = Field(None, description="Separate test data (skips the fraction split).")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Fraction split of `path`.")
    reshape: list[int] | None = Field(None, description="Reshape each example's features, e.g. [8, 8, 1].")
    normalize: NormalizeSpec = Field(default_factory=NormalizeSpec, description="Normalization (string shorthand: `standard`).")
    augment: AugmentSpec = Field(default_factory=AugmentSpec, description="Training-only augmentation.")
    class_weight: Literal["none", "balanced"] | dict[int, float] = Field(
        "none", description="`balanced` weights classes by inverse frequency; or a map class -> weight."
    )
    pipeline: PipelineSpec = Field(default_factory=PipelineSpec, description="tf.data settings.")
    label_names: list[str] | None = Field(None, description="Names of the classes, in label order.")
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="Where decoded examples are kept between epochs: memory; disk (image_folder: a "
        "cache file in the run directory; other sources read as none); none (read and decode from the files every "
        "epoch); auto: memory when the split's decoded size fits `cache_budget_mb`, else none."
    )
    cache_budget_mb: float = Field(512.0, gt=0, description="The largest decoded split `cache: auto` keeps in memory (MiB).")
    fit_samples: int = Field(
        4096, ge=1, description="Streamed sources fit normalization statistics on at most this many training "
        "examples, drawn with the recipe's seed (all of them when the split is smaller)."
    )

    @field_validator("reshape")
    @classmethod
    def _reshape(cls, v):
        if v is not None and (not v or any(d == 0 or d < -1 for d in v) or v.count(-1) > 1):
            raise ValueError("reshape needs positive sizes (at most one -1)")
        return v


class CsvInput(StrictModel):
    """One named model input made of columns of the CSV."""

    columns: list[str | int] = Field(..., min_length=1, description="The columns this input is made of.")
    type: Literal["numeric", "categorical", "text"] = Field(
        "numeric", description="numeric: floats (normalized); categorical: one int id per column (0 = unseen, "
        "vocabulary from the training split; embedded by the model); text: one column of free text as token ids."
    )
    normalize: NormalizeSpec | None = Field(None, description="numeric: normalization of this input (default: `data.normalize`).")
    max_tokens: int = Field(1000, ge=2, description="text: vocabulary size (including padding 0 and OOV 1).")
    sequence_length: int = Field(32, ge=1, description="text: token sequences are padded / cut to this length.")
    lowercase: bool = Field(True, description="text: lowercase before tokenizing.")

    @model_validator(mode="after")
    def _text_one_column(self):
        if self.type == "text" and len(self.columns) != 1:
            raise ValueError("a text input takes exactly one column")
        if self.normalize is not None and self.type != "numeric":
            raise ValueError(f"normalize applies to numeric inputs, not {self.type}")
        return self


class CsvData(_DataCommon):
    """A CSV file (optionally .gz): feature columns and one label column, or several named
    inputs (`inputs:`) made of its columns."""

    source: Literal["csv"]
    label_column: str | int = Field(..., description="Label column name (or index when header is false).")
    feature_columns: list[str | int] | None = Field(None, description="Feature columns; default: all other columns.")
    categorical_columns: list[str | int] = Field(default_factory=list, description="Columns one-hot encoded with a vocabulary from the training split.")
    header: bool = Field(True, description="The first row holds column names.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")
    skip_rows: int = Field(0, ge=0, description="Lines to skip at the top of the file, before the header (a preamble).")
    inputs: dict[str, CsvInput] | None = Field(
        None, description="Several named model inputs, each from columns of this CSV (numeric, categorical or "
        "text); a graph model consumes them by name, the mlp architecture embeds and concatenates them."
    )

    @model_validator(mode="after")
    def _inputs_alone(self):
        if self.inputs is None:
            return self
        for key in ("feature_columns", "reshape"):
            if getattr(self, key) is not None:
                raise ValueError(f"{key} cannot be combined with inputs (each input lists its columns)")
        if self.categorical_columns:
            raise ValueError("categorical_columns cannot be combined with inputs (use an input of type categorical)")
        if self.augment.enabled():
            raise ValueError("augment applies to single-input data, not to inputs")
        for name in self.inputs:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"input name {name!r}: use letters, digits and underscores (it names a model input)")
        return self


class NumpyData(_DataCommon):
    """A NumPy `.npz` (arrays by key) or `.npy` file of features (+ a labels file)."""

    source: Literal["numpy"]
    x_key: str = Field("x", description="Array name of the features in an .npz.")
    y_key: str = Field("y", description="Array name of the labels in an .npz.")
    labels_path: str | None = Field(None, description="For .npy features: the .npy file of labels.")

    @model_validator(mode="after")
    def _labels_file(self):
        if self.labels_path is not None:
            for key in ("validation_path", "test_path"):
                if str(getattr(self, key) or "").endswith(".npy"):
                    raise ValueError(
                        f"labels_path holds the labels of `path` only; give {key} as an .npz with "
                        f"{self.x_key!r} and {self.y_key!r} arrays"
                    )
        return self


class ImageFolderData(_DataCommon):
    """A folder with one subfolder of images per class (subfolder name = class name), or with
    `train/`, `validation/` (or `val/`) and `test/` folders that each hold the class subfolders.
    Images are listed, not loaded: they are decoded and resized in tf.data while training."""

    source: Literal["image_folder"]
    image_size: list[Pixels] = Field(..., min_length=2, max_length=2, description="Resize to [height, width].")
    color_mode: Literal["rgb", "grayscale"] = Field("rgb", description="Channels: 3 or 1.")
    extensions: list[str] = Field([".png", ".jpg", ".jpeg", ".bmp", ".gif"], description="Image file extensions.")


class TextData(_DataCommon):
    """Text: a CSV with a text and a label column, or a folder of .txt files per class."""

    source: Literal["text"]
    text_column: str = Field("text", description="CSV text column.")
    label_column: str = Field("label", description="CSV label column.")
    max_tokens: int = Field(10000, ge=2, description="Vocabulary size (including padding 0 and OOV 1).")
    sequence_length: int = Field(64, ge=1, description="Token sequences are padded / cut to this length.")
    lowercase: bool = Field(True, description="Lowercase before tokenizing.")


class TFRecordFeature(StrictModel):
    dtype: Literal["float32", "int64", "string"] = Field(..., description="Feature type in the records.")
    shape: list[Width] = Field(default_factory=list, description="Fixed shape ([] for a scalar).")


class TFRecordData(_DataCommon):
    """TFRecord files of tf.train.Example with a declared feature spec."""

    source: Literal["tfrecord"]
    features: dict[str, TFRecordFeature] = Field(..., description="Feature spec: name -> dtype and shape.")
    inputs: list[str] = Field(..., min_length=1, description="Features concatenated (flattened) into the model input.")
    label: str = Field(..., description="Feature holding the label.")
    compression: Literal["none", "gzip", "zlib"] = Field("none", description="Record compression.")

    @model_validator(mode="after")
    def _known(self):
        for name in [*self.inputs, self.label]:
            if name not in self.features:
                raise ValueError(f"feature {name!r} is not declared in `features`")
        for name in self.inputs:
            if self.features[name].dtype == "string":
                raise ValueError(f"input feature {name!r} is a string; inputs must be float32 or int64")
        return self


class SyntheticData(_DataCommon):
    """Generated data with learnable structure (smoke tests, benchmarks)."""

    source: Literal["synthetic"]
    path: str = Field("<synthetic>", description="Unused.")
    kind: Literal["classification", "regression", "sequence", "image", "tokens"] = Field(
        "classification", description="What to generate."
    )
    samples: int = Field(512, ge=4, description="Number of examples.")
    shape: list[Width] = Field([16], min_length=1, description="Shape of one example.")
    num_classes: int = Field(2, ge=2, description="Classes (classification, sequence, image, tokens).")
    vocab_size: int = Field(100, ge=4, description="Token vocabulary (kind=tokens).")
    noise: float = Field(0.5, ge=0.0, description="Noise level; higher is harder.")


DataSpec = Annotated[
    CsvData | NumpyData | ImageFolderData | TextData | TFRecordData | SyntheticData,
    Field(discriminator="source"),
]
DATA_SOURCES = ["csv", "numpy", "image_folder", "text", "tfrecord", "synthetic"]
