"""The ``model:`` section: exactly one of five ways to describe a model, or a GAN of two."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from dlcli.recipe.base import Pixels, StrictModel, closest
from dlcli.recipe.keras_names import KERAS_APPLICATIONS, KERAS_LAYERS
from dlcli.recipe.train import OptimizerSpec

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _check_layer_type(value: str) -> str:
    if value not in KERAS_LAYERS:
        hint = closest(value, sorted(KERAS_LAYERS))
        extra = f", did you mean {hint!r}?" if hint else ""
        raise ValueError(f"unknown Keras layer type {value!r}{extra}")
    return value


class LayerSpec(StrictModel):
    """One Keras layer: ``type`` is a class of ``keras.layers``; other keys are its arguments.

    Arguments pass through to the layer's constructor. Regularizers may be written
    ``kernel_regularizer: {l2: 1.0e-4}``; activations by name (``relu``, ``gelu``, ...).
    """

    model_config = ConfigDict(extra="allow")
    type: str = Field(..., description="Keras layer class name, e.g. Dense, Conv2D, LSTM.")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:  # arguments are open-ended
        return data

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_layer_type(v)

    def args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GraphNode(LayerSpec):
    """A named node of a functional graph, fed by earlier nodes or inputs."""

    name: str = Field(..., description="Node name, referenced by later nodes' `inputs`.")
    inputs: list[str] = Field(..., min_length=1, description="Names of input nodes or model inputs feeding this node.")
    share: str | None = Field(None, description="Reuse the layer (and weights) of the named node instead of a new layer.")
    type: str = Field("", description="Keras layer class name (not needed with `share`).")

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_layer_type(v) if v else v

    @model_validator(mode="after")
    def _type_or_share(self):
        if not self.type and not self.share:
            raise ValueError("a node needs `type` (a Keras layer) or `share` (a node to reuse)")
        return self


class GraphInput(StrictModel):
    name: str = Field(..., description="Input name (the model input's name).")
    shape: list[int | None] | None = Field(None, description="Shape without the batch axis; default: from the data.")
    dtype: str | None = Field(None, description="Input dtype; default: the data's (float32, or int32 for ids).")


class _ModelCommon(StrictModel):
    input_shape: list[int | None] | None = Field(
        None, description="Input shape without batch axis; default: taken from the data (checked against it)."
    )


class LayersModel(_ModelCommon):
    """A Sequential stack of Keras layers."""

    layers: list[LayerSpec] = Field(..., min_length=1, description="Layers in order.")


class GraphSpec(StrictModel):
    inputs: list[GraphInput] = Field(..., min_length=1, description="Model inputs.")
    nodes: list[GraphNode] = Field(..., min_length=1, description="Nodes in topological order.")
    outputs: list[str] = Field(..., min_length=1, description="Names of the output nodes.")

    @model_validator(mode="after")
    def _refs(self):
        known = {i.name for i in self.inputs}
        for node in self.nodes:
            if node.name in known:
                raise ValueError(f"node name {node.name!r} is used twice")
            for ref in node.inputs:
                if ref not in known:
                    raise ValueError(f"node {node.name!r}: input {ref!r} is not an earlier node or input")
            if node.share and node.share not in known:
                raise ValueError(f"node {node.name!r}: share {node.share!r} is not an earlier node")
            known.add(node.name)
        for out in self.outputs:
            if out not in known:
                raise ValueError(f"output {out!r} is not a node")
        return self


class GraphModel(_ModelCommon):
    """A functional graph: several inputs or outputs, residual links, shared layers."""

    graph: GraphSpec


class ApplicationSpec(StrictModel):
    name: str = Field(..., description="A keras.applications model, e.g. MobileNetV2, ResNet50, EfficientNetB0.")
    weights: str | None = Field(None, description="Local weights file for the backbone (.weights.h5), or null for random init. Nothing is downloaded.")
    input_shape: list[int] | None = Field(None, description="Backbone input shape; default: the data's (resize with `resize`).")
    resize: list[Pixels] | None = Field(None, min_length=2, max_length=2, description="Resize inputs to [height, width] inside the model.")
    trainable: Literal["frozen", "all"] | int = Field(
        "frozen", description="`frozen`: backbone not trained; `all`: fine-tune all; N: fine-tune from layer N on."
    )
    pooling: Literal["avg", "max"] = Field("avg", description="Global pooling after the backbone.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the head.")
    batchnorm_momentum: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Override the backbone's BatchNormalization momentum (keras.applications use 0.99-0.999; "
        "0.9 suits training from scratch or fine-tuning on small data).",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra backbone constructor arguments (e.g. alpha).")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in KERAS_APPLICATIONS:
            hint = closest(v, sorted(KERAS_APPLICATIONS))
            extra = f", did you mean {hint!r}?" if hint else ""
            raise ValueError(f"unknown keras.applications model {v!r}{extra}")
        return v


class ApplicationModel(_ModelCommon):
    """Transfer learning: a keras.applications backbone plus a new head."""

    application: ApplicationSpec
    output_activation: str = Field("auto", description="Head activation; auto: softmax / sigmoid / linear by task.")


class CodeModel(_ModelCommon):
    """User code ``module:function`` returning a Keras model (needs --allow-code)."""

    code: str = Field(..., description="`package.module:function`; called with `input_shape`, `num_outputs` and `args`.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments passed to the function.")

    @field_validator("code")
    @classmethod
    def _ref(cls, v: str) -> str:
        mod, _, fn = v.partition(":")
        if not fn or not all(_NAME.match(p) for p in mod.split(".")) or not fn.isidentifier():
            raise ValueError("expected `package.module:function`")
        return v


def _architecture_union():
    from dlcli.models.registry import architectures

    classes = tuple(a.params for a in architectures().values())
    return Annotated[classes if len(classes) == 1 else __import__("typing").Union[classes], Field(discriminator="architecture")]


ArchitectureModel = _architecture_union()


_KINDS = ("architecture", "layers", "graph", "application", "code")


def _which(data: Any, kinds=_KINDS) -> str | None:
    if isinstance(data, dict):
        found = [k for k in kinds if k in data]
        return f"<{found[0]}>" if len(found) == 1 else None
    for k in kinds:
        if hasattr(data, k):
            return f"<{k}>"
    return None


NetworkSpec = Annotated[
    Annotated[ArchitectureModel, Tag("<architecture>")]
    | Annotated[LayersModel, Tag("<layers>")]
    | Annotated[GraphModel, Tag("<graph>")]
    | Annotated[ApplicationModel, Tag("<application>")]
    | Annotated[CodeModel, Tag("<code>")],
    Discriminator(
        _which,
        custom_error_type="model_kind",
        custom_error_message="the model needs exactly one of: architecture, layers, graph, application, code",
    ),
]

GAN_LOSSES = ("non_saturating", "hinge", "wasserstein_gp")


class GanSpec(StrictModel):
    """Two networks trained against each other (``task: gan``): the generator maps a latent
    vector (and, conditional, a class id) to an example; the discriminator scores examples."""

    latent_dim: int = Field(..., gt=0, description="Size of the generator's latent input (a standard normal vector).")
    generator: NetworkSpec = Field(..., description="The generator: latent_dim inputs (plus a label embedding when "
                                   "conditional) to an example of the data's shape.")
    discriminator: NetworkSpec = Field(..., description="The discriminator: an example (plus a label map when "
                                       "conditional) to one score per example (a logit; no sigmoid).")
    loss: Literal[GAN_LOSSES] = Field("non_saturating", description="non_saturating (logistic), hinge, or "  # type: ignore[valid-type]
                                      "wasserstein_gp (WGAN with gradient penalty).")
    gp_weight: float = Field(10.0, ge=0, description="Gradient penalty weight (wasserstein_gp).")
    d_steps: int = Field(1, ge=1, le=10, description="Discriminator updates per generator update.")
    conditional: bool = Field(False, description="Class-conditional: both networks also see the label "
                              "(needs labelled data).")
    label_embedding: int = Field(16, ge=1, description="Conditional: size of the generator's label embedding.")
    generator_optimizer: OptimizerSpec | None = Field(None, description="Default: train.optimizer.")
    discriminator_optimizer: OptimizerSpec | None = Field(None, description="Default: train.optimizer.")
    judge: str | None = Field(None, description="A classification run (folder, relative to the recipe) whose "
                              "model scores the samples; default: a small classifier dlcli trains on the "
                              "training split first, through the one trainer (RUN_DIR/judge/, a run of its own).")
    judge_epochs: int = Field(20, ge=1, description="Epochs of the classifier dlcli trains as judge.")
    score_samples: int = Field(1000, ge=100, description="Generated samples per epoch for the Frechet distance.")
    grid: int = Field(8, ge=1, le=32, description="The sample grid written each epoch is grid x grid images.")


class GanModel(StrictModel):
    """A generative adversarial network (``task: gan``)."""

    gan: GanSpec


ModelSpec = Annotated[
    Annotated[ArchitectureModel, Tag("<architecture>")]
    | Annotated[LayersModel, Tag("<layers>")]
    | Annotated[GraphModel, Tag("<graph>")]
    | Annotated[ApplicationModel, Tag("<application>")]
    | Annotated[CodeModel, Tag("<code>")]
    | Annotated[GanModel, Tag("<gan>")],
    Discriminator(
        lambda data: _which(data, (*_KINDS, "gan")),
        custom_error_type="model_kind",
        custom_error_message="the model needs exactly one of: architecture, layers, graph, application, code, gan",
    ),
]
