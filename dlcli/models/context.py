"""What a model builder knows about the data. No Keras import."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputInfo:
    """One named input of several (``data.inputs``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # float32, or int32 for ids
    kind: str  # numeric | categorical | text
    vocab_size: int | None = None  # categorical and text: ids run 0..vocab_size-1


@dataclass(frozen=True)
class BuildContext:
    input_shape: tuple[int, ...]  # without the batch axis
    input_dtype: str  # "float32", or "int32" for token ids
    task: str  # classification | regression | reconstruction
    num_outputs: int  # classes, regression targets, or flattened input size
    output_shape: tuple[int, ...]  # target shape without batch axis
    vocab_size: int | None = None  # token inputs
    seed: int = 0
    inputs: tuple[InputInfo, ...] = ()  # several named inputs (then input_shape is ())

    def head_activation(self, requested: str = "auto") -> str:
        if requested != "auto":
            return requested
        return "softmax" if self.task == "classification" else "linear"
