"""dlcli's native latency next to the runtimes' own tools, for shipped recipes.

    python benchmarks/latency.py [--recipes digits_cnn breast_cancer_mlp ...] [--threads 1]

For each recipe: train it briefly (latency does not depend on the weights), export
float32 and int8 TFLite and ONNX, then print per artifact
- dlcli's native p50 (dlcli.latency: LiteRT CompiledModel / onnxruntime io_binding), for
  TFLite the mean of the p50s of `dlcli benchmark`'s own process and --repeats fresh ones,
- `litert-benchmark`'s median (the tool shipped in the ai-edge-litert wheel, its own code,
  unrounded), the mean over --repeats fresh processes interleaved with dlcli's, for TFLite,
- dlcli's Python-harness p50 (NumPy in and out) and the Python overhead,
- the delegation status.
Target (issue: native latency): dlcli's native TFLite figure within 20% of litert-benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
DEFAULT = ["digits_cnn", "breast_cancer_mlp", "digits_rnn", "digits_transformer"]


# litert-benchmark's own code and loop, run in a fresh process; only its rounding of the
# results to 0.01 ms is lifted (a small model runs in 0.004-0.05 ms), by shadowing the
# module's `round` global.
TOOL = """
import json, sys
import ai_edge_litert.tools.benchmark_litert_model as b
b.round = lambda value, digits=None: value
sys.argv = ["litert-benchmark", *sys.argv[1:]]
print("RESULT " + json.dumps(b.run_benchmark(b.parse_args())))
"""


def litert_benchmark(path: Path, threads: int, warmup: int, runs: int) -> float:
    """The median of `litert-benchmark --model PATH` (same threads, warm-up and runs)."""
    proc = subprocess.run([sys.executable, "-c", TOOL, f"--model={path}", f"--num_threads={threads}",
                           f"--warmup_runs={warmup}", f"--num_runs={runs}"], check=True, capture_output=True,
                          text=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])["latency"]["median_ms"]


# dlcli's own native measure (what `dlcli benchmark` calls), in a fresh process like the tool's:
# a microsecond model runs at two speeds (on 2026-12-03 the digits CNN's int8 file 0.011 or
# 0.017 ms) that switch between processes and in phases of tens of seconds, for both tools
# alike, so each side's figure is the mean over interleaved processes, not one process (nor
# their median: with two speeds, a median of a few processes jumps from one to the other).
DLCLI = """
import sys
from pathlib import Path
from dlcli.latency import native
print("RESULT", native(Path(sys.argv[1]), "tflite", *map(int, sys.argv[2:])).latency_ms["p50"])
"""


def dlcli_native(path: Path, threads: int, warmup: int, runs: int) -> float:
    """dlcli.latency.native's p50 for ``path``, measured in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", DLCLI, str(path), str(threads), str(warmup), str(runs)],
                          check=True, capture_output=True, text=True)
    return float(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")).split()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="+", default=DEFAULT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--runs", type=int, default=2000)  # a 5 us model: 500 runs left +-25% between processes
    ap.add_argument("--repeats", type=int, default=9,
                    help="fresh processes of each tool per artifact (a process can be 2x faster than the next)")
    ap.add_argument("--verbose", action="store_true", help="print every measure")
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
            if m.native is None or not m.native["latency_ms"]:
                continue
            nat, tool = [m.native["latency_ms"]["p50"]], []
            for _ in range(args.repeats if m.format == "tflite" else 0):  # interleaved, fresh each time
                tool.append(litert_benchmark(Path(m.path), args.threads, args.warmup, args.runs))
                nat.append(dlcli_native(Path(m.path), args.threads, args.warmup, args.runs))
            if args.verbose and tool:
                print(f"{name} {m.name}: dlcli {nat}, litert-benchmark {tool}", flush=True)
            ops = m.native["fallback_ops"]
            rows.append((name, m.name, statistics.fmean(nat), statistics.fmean(tool) if tool else None,
                         m.latency_ms["p50"], m.python_overhead_ms, m.native["fully_accelerated"],
                         ",".join(ops[:4]) + (f",+{len(ops) - 4}" if len(ops) > 4 else "")))
    print(f"threads {args.threads}, {args.warmup} warm-up, {args.runs} runs; times in ms (p50 / median; TFLite: the mean "
          f"over {args.repeats} processes of each tool)")
    print(f"{'recipe':20} {'artifact':22} {'native':>8} {'litert-bm':>9} {'ratio':>6} {'harness':>8} "
          f"{'py ovh':>7}  delegation")
    ratios = []
    for recipe, art, nat, tool, harness, ovh, full, fallback in rows:
        ratio = f"{nat / tool:.2f}" if tool else "-"
        if tool:
            ratios.append(nat / tool)
        deleg = "-" if full is None else ("full" if full else f"partial ({fallback})")
        tool_ms = f"{tool:9.4f}" if tool is not None else f"{'-':>9}"
        print(f"{recipe:20} {art:22} {nat:8.4f} {tool_ms} {ratio:>6} {harness:8.4f} "
              f"{ovh:7.4f}  {deleg}")
    if ratios:
        worst = max(abs(r - 1) for r in ratios)
        print(f"native / litert-benchmark: median {statistics.median(ratios):.2f}, worst deviation {worst:.0%} "
              f"({'within' if worst <= 0.20 else 'OUTSIDE'} the 20% target)")


if __name__ == "__main__":
    main()
