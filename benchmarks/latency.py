"""dlcli's native latency next to the runtimes' own tools, for shipped recipes.

    python benchmarks/latency.py [--recipes digits_cnn breast_cancer_mlp ...] [--threads 1]

For each recipe: train it briefly (latency does not depend on the weights), export
float32 and int8 TFLite and ONNX, then print per artifact
- dlcli's native p50 (dlcli.latency: LiteRT CompiledModel / onnxruntime profiler),
- `litert-benchmark`'s median (the tool shipped in the ai-edge-litert wheel) for TFLite,
- dlcli's Python-harness p50 (NumPy in and out) and the Python overhead,
- the delegation status.
Target (issue: native latency): dlcli's native TFLite figure within 20% of litert-benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
DEFAULT = ["digits_cnn", "breast_cancer_mlp", "digits_rnn", "digits_transformer"]


def litert_benchmark(path: Path, threads: int, warmup: int, runs: int) -> float:
    tool = shutil.which("litert-benchmark") or str(Path(sys.executable).parent / "litert-benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run([tool, f"--model={path}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
                        f"--num_runs={runs}", f"--result_json={out}"], check=True, capture_output=True)
        return json.loads(out.read_text())["latency"]["median_ms"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="+", default=DEFAULT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--root", default=str(REPO / "runs" / "latency"))
    args = ap.parse_args()
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from dlcli.benchmark import benchmark
    from dlcli.export import export_run

    rows = []
    for name in args.recipes:
        run = Path(args.root) / name
        if not (run / "model.keras").exists():
            subprocess.run([sys.executable, "-m", "dlcli", "train", str(REPO / "recipes" / f"{name}.yaml"),
                            "--run-dir", str(run), "--overwrite", "--quiet", "--set", "train.epochs=2"],
                           check=True)
        export_run(run, ["tflite", "onnx"], "int8")
        res = benchmark([run], runs=args.runs, warmup=args.warmup, threads=args.threads)
        for m in res.results:
            if m.native is None:
                continue
            tflite = m.format == "tflite"
            tool = litert_benchmark(Path(m.path), args.threads, args.warmup, args.runs) if tflite else None
            rows.append((name, m.name, m.native["latency_ms"]["p50"], tool, m.latency_ms["p50"], m.python_overhead_ms,
                         m.native["fully_accelerated"], ",".join(m.native["fallback_ops"])))
    print(f"threads {args.threads}, {args.warmup} warm-up, {args.runs} runs; times in ms (p50 / median)")
    print(f"{'recipe':20} {'artifact':22} {'native':>8} {'litert-bm':>9} {'ratio':>6} {'harness':>8} "
          f"{'py ovh':>7}  delegation")
    ratios = []
    for recipe, art, nat, tool, harness, ovh, full, fallback in rows:
        ratio = f"{nat / tool:.2f}" if tool else "-"
        if tool:
            ratios.append(nat / tool)
        deleg = "-" if full is None else ("full" if full else f"partial ({fallback})")
        print(f"{recipe:20} {art:22} {nat:8.4f} {tool if tool is not None else '-':>9} {ratio:>6} {harness:8.4f} "
              f"{ovh:7.4f}  {deleg}")
    if ratios:  # litert-benchmark rounds to 0.01 ms: a difference within that rounding agrees
        worst = max(abs(r - 1) for r in ratios)
        print(f"native / litert-benchmark: median {statistics.median(ratios):.2f}, worst deviation {worst:.0%} "
              f"({'within' if worst <= 0.20 else 'OUTSIDE'} the 20% target)")


if __name__ == "__main__":
    main()
