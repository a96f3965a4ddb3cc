from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console
from dlcli.latency import delegation_text


@handle_errors
def benchmark(
    paths: list[Path] = typer.Argument(..., metavar="RUN_DIR | ARTIFACT...",
                                       help="A run (its Keras model and every exported artifact) or artifacts."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Batch size of the throughput measure."),
    runs: int = typer.Option(100, "--runs", "-n", help="Timed batch-1 calls per model, in each harness."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed batch-1 calls before the timed ones."),
    threads: int = typer.Option(1, "--threads", help="CPU threads of the TFLite and ONNX runtimes (1, as on "
                                "small devices)."),
    native: bool = typer.Option(True, "--native/--no-native", help="Also time TFLite and ONNX artifacts in the "
                                "runtime's own loop (LiteRT CompiledModel, onnxruntime io_binding) and show delegation."),
    fail_under: list[str] = typer.Option([], "--fail-under", help="METRIC=VALUE: fail when a model's test metric "
                                         "is below it (e.g. accuracy=0.95); repeatable."),
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", help="Fail when a model's p50 batch-1 latency "
                                         "is above this."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Allow a SavedModel that dlcli did not export "
                                    "(it runs its own graph)."),
) -> None:
    """Size, latency, throughput, memory and test metric of each model, side by side.

    The Keras model and each exported artifact run in their real runtimes.
    p50/p95 are timed through Python (NumPy in and out); "native p50" is the runtime's own
    figure, and the difference is the Python overhead. Exit code 7 when a threshold is
    missed, 10 when a runtime cannot time an artifact natively."""
    quiet_frameworks()
    from dlcli.benchmark import benchmark as benchmark_fn

    with native_quiet() as err:
        log = (lambda m: None) if json_out else (lambda m: print(m, file=err, flush=True))
        res = benchmark_fn(paths, batch_size, runs, warmup, fail_under=fail_under, max_latency_ms=max_latency_ms,
                           log=log, allow_code=allow_code, threads=threads, native=native)
    if json_out:
        emit_json(res.to_json())
    else:
        console = stdout_console()
        console.print(_table(res, native))
        for m in res.results:
            if m.native and m.native["fully_accelerated"] is False:
                console.print(f"{m.name}: {delegation_text(m.native)} (not fully accelerated)")
            if m.native and m.native.get("skipped"):
                console.print(f"{m.name}: no native figure: {m.native['skipped']}")
    res.raise_for_failures()


def _table(res, native: bool):
    from rich.table import Table

    t = Table(title=f"{res.run_dir}: batch-1 latency over {res.runs} calls after {res.warmup} warm-up, "
              f"{res.threads} thread(s); throughput at batch {res.batch_size}", title_justify="left")
    t.add_column("model", no_wrap=True)
    cols = ["size", "load s", "p50 ms", "p95 ms", *(["native", "py ovh"] if native else []),
            "samples/s", "peak MB", res.results[0].metric["name"], *(["XNNPACK"] if native else [])]
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    for m in res.results:
        size = f"{m.size_bytes / 1024:.1f}k" if m.size_bytes < 1 << 20 else f"{m.size_bytes / (1 << 20):.2f}M"
        row = [m.name, size, f"{m.load_seconds:.3f}", f"{m.latency_ms['p50']:.3f}", f"{m.latency_ms['p95']:.3f}"]
        if native:
            timed = m.native and m.native["latency_ms"]
            row += [f"{m.native['latency_ms']['p50']:.3f}", f"{m.python_overhead_ms:.3f}"] if timed else ["-", "-"]
        row += [f"{m.throughput_samples_per_s:,.0f}", f"{m.peak_memory_bytes / (1 << 20):.1f}",
                f"{m.metric['value']:.4f}"]
        if native:
            full = (m.native or {}).get("fully_accelerated")
            row.append("-" if full is None else "full" if full else "partial")
        t.add_row(*row)
    return t

