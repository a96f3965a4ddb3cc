"""A large CSV streamed row by row vs featurized into memory: peak RSS and rows/s.

    python benchmarks/data_scale_csv.py [--rows 1000000] [--columns 32] [--keep]

Writes a CSV of `--rows` rows (`--columns` numeric columns, one categorical column, a
label), then trains one epoch of a small MLP on it twice, each in a fresh process:

* `data.cache: none`: rows read, featurized and normalized 1,024 at a time from the file;
* `data.cache: memory`: every split featurized once into memory (the in-memory path).

Prints, per run, the peak resident memory (`ru_maxrss`), the training throughput (rows/s
of the fit) and the whole process time (reading, the validating pass, fitting, training,
evaluation), and the size of the featurized float32 training split for comparison. The
file is deleted afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

RECIPE = """
name: data-scale-csv
seed: 1
data:
  source: csv
  path: {path}
  label_column: label
  categorical_columns: [site]
  normalize: standard
  cache: {cache}
  split: {{validation: 0.05, test: 0.0}}
model: {{architecture: mlp, units: [64, 32]}}
train:
  epochs: 1
  batch_size: 256
  optimizer: {{name: adam, learning_rate: 0.001}}
  callbacks: {{tensorboard: false, early_stopping: null}}
"""

RUN = """
import json, resource, sys, time
from dlcli.recipe.loader import load_recipe
from dlcli.train import train
t = time.perf_counter()
res = train(load_recipe(sys.argv[1]), sys.argv[2], progress="none", pipeline=False)
print(json.dumps({"rows_per_s": res.samples_per_second, "process_s": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "accuracy": res.metrics["validation"]["accuracy"]}))
"""


def write_csv(path: Path, rows: int, columns: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=columns)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join([*(f"f{i}" for i in range(columns)), "site", "label"]) + "\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            x = rng.normal(size=(n, columns)).astype(np.float32)
            site = rng.integers(0, 5, n)
            label = ((x @ w + site - 2) > 0).astype(int)
            body = np.char.mod("%.4f", x)
            lines = [",".join(r) + f",s{s},{y}" for r, s, y in zip(body.tolist(), site, label, strict=True)]
            fh.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--columns", type=int, default=32)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dlcli-csv-scale-"))
    try:
        path = tmp / "big.csv"
        write_csv(path, args.rows, args.columns)
        featurized = args.rows * 0.95 * (args.columns + 5) * 4 / 2**20
        print(f"{args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB of CSV, "
              f"training split featurized: {featurized:.0f} MiB float32")
        for cache in ("none", "memory"):
            recipe = tmp / f"{cache}.yaml"
            recipe.write_text(RECIPE.format(path=path, cache=cache))
            out = subprocess.run([sys.executable, "-c", RUN, str(recipe), str(tmp / f"run-{cache}")],
                                 capture_output=True, text=True, cwd=REPO, check=False)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"cache {cache:6}  peak RSS {r['peak_rss_mb']:7.0f} MiB  {r['rows_per_s']:9,.0f} rows/s (fit)  "
                  f"process {r['process_s']:6.1f} s  val accuracy {r['accuracy']:.3f}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
