"""dlcli's own Keras layers, registered so ``model.keras`` files reload in safe mode.

Loading a dlcli model outside dlcli: ``import dlcli.models.custom_layers`` first.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="dlcli")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a (batch, steps, dim) input."""

    def __init__(self, sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)

    def build(self, input_shape):
        self.position = self.add_weight(
            name="position",
            shape=(self.sequence_length, int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, x):
        return x + keras.ops.cast(self.position, x.dtype)[None, : keras.ops.shape(x)[1], :]

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length}
