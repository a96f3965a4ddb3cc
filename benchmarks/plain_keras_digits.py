"""The digits CNN written by hand in plain Keras: the baseline for train_overhead.py.

Same data, split sizes, preprocessing, layers, optimizer, schedule, batch size and
epochs as `dlcli train recipes/digits_cnn.yaml` (without early stopping), written as a
competent Keras user would: a `tf.data` pipeline (cache, shuffle, batch, prefetch) into
`model.fit`. Prints one JSON object: samples per second of model.fit.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main(epochs: int, seed: int = 42) -> None:
    import keras

    keras.utils.set_random_seed(seed)
    with gzip.open(REPO / "data" / "digits" / "digits.csv.gz", "rt") as fh:
        raw = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x = (raw[:, :64] * 0.0625).reshape(-1, 8, 8, 1)
    y = raw[:, 64].astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    n_test = n_val = round(len(x) * 0.15)
    tr, va = idx[n_test + n_val:], idx[n_test:n_test + n_val]

    inputs = keras.Input((8, 8, 1))
    h = inputs
    for b, f in enumerate([32, 64]):
        h = keras.layers.Conv2D(f, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization(momentum=0.9)(h)
        h = keras.layers.Activation("relu")(h)
        h = keras.layers.MaxPooling2D(2)(h)
        h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    h = keras.layers.Dropout(0.2)(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, out)
    steps = int(np.ceil(len(tr) / 32))
    lr = keras.optimizers.schedules.CosineDecay(0.0, (epochs - 1) * steps, warmup_target=0.003, warmup_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=False)
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    train_ds = (tf.data.Dataset.from_tensor_slices((x[tr], y[tr])).cache().shuffle(len(tr), seed=seed)
                .batch(32).prefetch(auto))
    val_ds = tf.data.Dataset.from_tensor_slices((x[va], y[va])).cache().batch(32).prefetch(auto)
    t = time.perf_counter()
    model.fit(train_ds, epochs=epochs, validation_data=val_ds, verbose=0)
    fit = time.perf_counter() - t
    print(json.dumps({"samples_per_second": len(tr) * epochs / fit, "fit_seconds": fit, "train": len(tr)}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
