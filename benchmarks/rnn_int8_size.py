"""int8 vs float32 TFLite size of recurrent models, and where the int8 bytes go.

    python benchmarks/rnn_int8_size.py [--epochs 2] [--out DIR]

For a BiGRU 32 (the shipped digits_rnn), GRU 128, LSTM 128 and BiLSTM 64 on the digits rows
(8 steps of 8 pixels): train briefly, export float32 and int8 TFLite with per-channel and
with per-tensor weight scales, and print the sizes with the int8 file's parts read from
its flatbuffer (weight bytes, tensor-name bytes, quantization-parameter bytes, op and
tensor counts) and the int8 gate's verdict. See docs/export.md for the figures.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS = [("gru", 32, True), ("gru", 128, False), ("lstm", 128, False), ("lstm", 64, True)]


def parts(path: Path) -> dict:
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    out = {"bytes": len(data), "weights": sum(len(b.data) for b in m.buffers if b.data is not None),
           "names": 0, "quant": 0, "ops": 0, "tensors": 0}
    for sg in m.subgraphs:
        out["ops"] += len(sg.operators)
        out["tensors"] += len(sg.tensors)
        for t in sg.tensors:
            out["names"] += len(t.name or b"")
            q = t.quantization
            for attr in ("scale", "zeroPoint", "min", "max"):
                value = getattr(q, attr, None) if q is not None else None
                if value is not None:
                    out["quant"] += np.asarray(value).nbytes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from dlcli.cli.common import quiet_frameworks

    quiet_frameworks()
    from dlcli.export import export_run
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        for cell, units, bi in MODELS:
            name = f"{'bi' if bi else ''}{cell}{units}"
            sets = [f"name={name}", f"model.cell={cell}", f"model.units=[{units}]",
                    f"model.bidirectional={str(bi).lower()}", f"train.epochs={args.epochs}"]
            train(load_recipe(REPO / "recipes" / "digits_rnn.yaml", sets), root / name, progress="none",
                  pipeline=False, overwrite=True)
            for per_channel in (True, False):
                res = export_run(root / name, ["tflite"], "int8", out_dir=root / name / f"per_channel_{per_channel}",
                                 int8_per_channel=per_channel)
                f = next(a for a in res.artifacts if a.quantization == "none")
                q = next(a for a in res.artifacts if a.quantization == "int8")
                pf, pq = parts(res.out_dir / f.path), parts(res.out_dir / q.path)
                print(f"{name:9} {'per-channel' if per_channel else 'per-tensor ':11} float32 {pf['bytes']:>8,} "
                      f"int8 {pq['bytes']:>8,} ({pq['bytes'] / pf['bytes']:.2f}x) | int8 weights {pq['weights']:,} "
                      f"names {pq['names']:,} quant params {pq['quant']:,} ops {pq['ops']} tensors {pq['tensors']} | "
                      f"float32 ops {pf['ops']} | gate {q.status}", flush=True)


if __name__ == "__main__":
    main()
