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


@keras.saving.register_keras_serializable(package="dlcli")
class VaeSampling(keras.layers.Layer):
    """A VAE's latent draw: ``[z_mean, z_log_var] -> z``. Training: the reparameterised
    sample ``mean + exp(log_var / 2) * eps`` (eps from a seeded generator, a model
    variable, so a resumed run draws the same), and the KL divergence to N(0, I) added as
    a loss, per latent vector, times ``kl_weight / elements`` (the reconstruction loss is a
    mean over the ``elements`` values of an example). Inference: the mean (deterministic,
    exportable)."""

    def __init__(self, kl_weight: float = 1.0, elements: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight, self.elements, self.seed = float(kl_weight), int(elements), seed
        self.seeds = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        kl = -0.5 * keras.ops.sum(1.0 + log_var - keras.ops.square(mean) - keras.ops.exp(log_var), axis=-1)
        self.add_loss(keras.ops.mean(kl) * (self.kl_weight / self.elements))
        if not training:
            return mean
        eps = keras.random.normal(keras.ops.shape(mean), seed=self.seeds)
        return mean + keras.ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "kl_weight": self.kl_weight, "elements": self.elements, "seed": self.seed}


from dlcli.models import qat_layers  # noqa: F401  (registers the quantization-aware training layers)
