"""Training on an image folder larger than memory should be: dlcli vs `image_dataset_from_directory`.

    python benchmarks/data_scale.py [--images 22000] [--size 96] [--keep]

Makes a folder of PNGs (10 classes, `--size`x`--size`x3; 22,000 of 96x96 decode to
2.4 GB of float32), then trains one epoch of the same small CNN twice, each in a fresh
process:

* dlcli: `data.source: image_folder` with `cache: auto` (the split is over the memory
  budget, so it streams: files decoded in tf.data every epoch);
* plain Keras: `keras.utils.image_dataset_from_directory` + `model.fit`, what a
  competent user writes.

Prints, per run, the peak resident memory of the process (`ru_maxrss`) and the training
throughput in images/s (dlcli: its own fit-time figure; plain: images / `fit` seconds),
then the throughput ratio dlcli / plain. Targets: dlcli peak RSS < 1.5 GB, ratio >= 1.0.
The folder is deleted afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLASSES = 10
BATCH = 64

RECIPE = """
name: data-scale
seed: 1
data:
  source: image_folder
  path: {folder}
  image_size: [{size}, {size}]
  normalize: {{method: rescale, scale: 0.00392156862745098}}
  cache: auto
  split: {{validation: 0.0, test: 0.0}}
model: {{architecture: cnn, filters: [8, 16], dense: [32], dropout: 0.0}}
train:
  epochs: 1
  batch_size: {batch}
  optimizer: {{name: adam, learning_rate: 0.001}}
  callbacks: {{tensorboard: false, early_stopping: null}}
"""

DLCLI = """
import json, resource, sys, time
from dlcli.recipe.loader import load_recipe
from dlcli.train import train
t = time.perf_counter()
res = train(load_recipe(sys.argv[1]), sys.argv[2], progress="none", pipeline=False)
print(json.dumps({"images_per_s": res.samples_per_second, "process_s": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PLAIN = """
import json, resource, sys, time
import keras, tensorflow as tf
t = time.perf_counter()
keras.utils.set_random_seed(1)
size, batch, classes = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ds = keras.utils.image_dataset_from_directory(sys.argv[1], image_size=(size, size), batch_size=batch,
                                              shuffle=True, seed=1, verbose=False)
n = len(ds.file_paths)
ds = ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
inputs = keras.Input((size, size, 3))
x = inputs
for f in (8, 16):
    x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D()(keras.layers.ReLU()(x))
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dense(32, activation="relu")(x)
model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
f0 = time.perf_counter()
model.fit(ds, epochs=1, verbose=0)
fit_s = time.perf_counter() - f0
print(json.dumps({"images_per_s": n / fit_s, "process_s": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_folder(root: Path, images: int, size: int) -> float:
    """Class-dependent smooth patterns plus noise, as PNG. Returns the seconds it took."""
    import numpy as np
    import tensorflow as tf

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True)
    for i in range(images):
        k = i % CLASSES
        base = np.stack([np.sin((k + 1) * 3 * xx + c) * np.cos((k % 3 + 1) * 2 * yy) for c in range(3)], -1)
        img = np.clip(127.5 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        (root / f"class_{k}" / f"{i:06d}.png").write_bytes(tf.io.encode_png(img).numpy())
    return time.perf_counter() - t


def run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=22000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dlcli-data-scale-"))
    try:
        folder = tmp / "images"
        made = make_folder(folder, args.images, args.size)
        on_disk = sum(f.stat().st_size for f in folder.rglob("*.png")) / 2**20
        decoded = args.images * args.size * args.size * 3 * 4 / 2**30
        print(f"{args.images} PNGs of {args.size}x{args.size}x3: {on_disk:.0f} MiB on disk, "
              f"{decoded:.2f} GiB as float32 (made in {made:.0f} s)")
        recipe = tmp / "recipe.yaml"
        recipe.write_text(RECIPE.format(folder=folder, size=args.size, batch=BATCH))
        dl = run(DLCLI, str(recipe), str(tmp / "run"))
        plain = run(PLAIN, str(folder), str(args.size), str(BATCH), str(CLASSES))
        print(f"{'':28s} {'peak RSS MiB':>12s} {'images/s':>9s} {'process s':>9s}")
        for name, r in (("dlcli (image_folder, stream)", dl), ("image_dataset_from_directory", plain)):
            print(f"{name:28s} {r['peak_rss_mb']:12.0f} {r['images_per_s']:9.0f} {r['process_s']:9.1f}")
        print(f"throughput ratio dlcli / plain: {dl['images_per_s'] / plain['images_per_s']:.2f} (target >= 1.0); "
              f"dlcli peak RSS {dl['peak_rss_mb']:.0f} MiB (target < 1536)")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
