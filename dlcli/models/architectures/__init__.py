"""Built-in architectures; importing this package registers them (no Keras import)."""

from dlcli.models.architectures import autoencoder, cnn, mlp, rnn, transformer, vae  # noqa: F401
