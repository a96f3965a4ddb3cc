"""The adversarial train step: a Keras model holding the generator and the discriminator
whose ``train_step`` runs ``d_steps`` discriminator updates, then one generator update.

The one trainer runs it like any model's step (``strategy.run`` inside a compiled loop), so
GANs get the same strategies, step-exact resume and divergence guard as every stage. The
generator's optimizer is the model's own (``model.optimizer``); the discriminator's
variables are listed in :attr:`GAN.extra_state` for checkpoints to carry. The latent draws
come from a seeded generator whose state is a model variable, so a resumed run draws the
same latents. Losses are means over the global batch (divided by the replicas in sync, as
Keras's own losses are under ``tf.distribute``).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _replicas() -> float:
    return float(tf.distribute.get_strategy().num_replicas_in_sync)


def d_loss_of(kind: str, real, fake):
    if kind == "hinge":
        return tf.reduce_mean(tf.nn.relu(1.0 - real)) + tf.reduce_mean(tf.nn.relu(1.0 + fake))
    if kind == "wasserstein_gp":
        return tf.reduce_mean(fake) - tf.reduce_mean(real) + 1e-3 * tf.reduce_mean(tf.square(real))  # drift term
    return tf.reduce_mean(tf.nn.softplus(-real)) + tf.reduce_mean(tf.nn.softplus(fake))


def g_loss_of(kind: str, fake):
    if kind in ("hinge", "wasserstein_gp"):
        return -tf.reduce_mean(fake)
    return tf.reduce_mean(tf.nn.softplus(-fake))  # non-saturating: -log sigmoid(D(G(z)))


class GAN(keras.Model):
    def __init__(self, generator, discriminator, spec, seed: int):
        super().__init__(name="gan")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.kind, self.d_steps = spec.latent_dim, spec.loss, spec.d_steps
        self.gp_weight, self.conditional = spec.gp_weight, spec.conditional
        self.seeds = keras.random.SeedGenerator(seed, name="latent_seed")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_optimizer = None
        self.built = True  # both networks are built: nothing for the loop's symbolic build to trace

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    @property
    def extra_state(self) -> list:
        return list(self.d_optimizer.variables)

    def compile(self, g_optimizer, d_optimizer, jit_compile: bool = False):
        super().compile(optimizer=g_optimizer, jit_compile=jit_compile)
        self.d_optimizer = d_optimizer
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def _cond(self, example, label):
        return [example, label] if self.conditional else example

    def _fake(self, batch, label, training: bool):
        z = keras.random.normal((batch, self.latent_dim), seed=self.seeds)
        return self.generator(self._cond(z, label), training=training)

    def _penalty(self, real, fake, label):
        """WGAN-GP: the critic's gradient norm on random interpolates, pulled to 1."""
        shape = tf.concat([tf.shape(real)[:1], tf.ones([tf.rank(real) - 1], tf.int32)], 0)
        eps = keras.random.uniform(shape, seed=self.seeds)
        mixed = real + eps * (fake - real)
        with tf.GradientTape() as tape:
            tape.watch(mixed)
            score = self.discriminator(self._cond(mixed, label), training=True)
        grads = tape.gradient(score, mixed)
        norm = tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(grads, [tf.shape(grads)[0], -1])), axis=1) + 1e-12)
        return tf.reduce_mean(tf.square(norm - 1.0))

    def _update(self, loss_fn, network, optimizer):
        """One optimizer step of ``network`` on ``loss_fn()`` (plus its own regularization losses)."""
        with tf.GradientTape() as tape:
            loss = loss_fn()
            loss += tf.add_n(network.losses) if network.losses else 0.0
            scaled = loss / _replicas()
        variables = network.trainable_variables
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss

    def _d_loss(self, real, label):
        fake = self._fake(tf.shape(real)[0], label, training=True)
        d_real = self.discriminator(self._cond(real, label), training=True)
        d_fake = self.discriminator(self._cond(fake, label), training=True)
        loss = d_loss_of(self.kind, d_real, d_fake)
        if self.kind == "wasserstein_gp" and self.gp_weight > 0:
            loss += self.gp_weight * self._penalty(real, fake, label)
        return loss

    def _g_loss(self, batch, label):
        fake = self._fake(batch, label, training=True)
        return g_loss_of(self.kind, self.discriminator(self._cond(fake, label), training=True))

    @staticmethod
    def _unpack(data):
        x, y = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data, None)
        label = tf.reshape(tf.cast(y, tf.int32), [-1, 1]) if y is not None else None
        return x, label

    def train_step(self, data):
        real, label = self._unpack(data)
        for _ in range(self.d_steps):  # the same real batch for every critic update
            d_loss = self._update(lambda: self._d_loss(real, label), self.discriminator, self.d_optimizer)
        g_loss = self._update(lambda: self._g_loss(tf.shape(real)[0], label), self.generator, self.optimizer)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """Both losses on held-out real examples and fresh fakes; no update."""
        real, label = self._unpack(data)
        fake = self._fake(tf.shape(real)[0], label, training=False)
        d_real = self.discriminator(self._cond(real, label), training=False)
        d_fake = self.discriminator(self._cond(fake, label), training=False)
        self.d_loss_tracker.update_state(d_loss_of(self.kind, d_real, d_fake))
        self.g_loss_tracker.update_state(g_loss_of(self.kind, d_fake))
        return {m.name: m.result() for m in self.metrics}
