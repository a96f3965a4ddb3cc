"""``benchmark(paths) -> BenchmarkResult``: the Keras model and each exported artifact, in
its real runtime, side by side: file size, load time, p50 / p95 latency at batch 1 (after
warm-up), throughput at batch B, peak memory, and the test metric.

Peak memory is the growth of the process's peak resident set while the model is loaded
and run; on Linux the peak is reset before each model (``/proc/self/clear_refs``), so
every figure is that model's own. Elsewhere it falls back to ``ru_maxrss`` growth, which
only ever increases (noted in the result).
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import write_json
from dlcli.errors import ThresholdError, UsageError


def _rss_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Measure:
    name: str
    format: str
    quantization: str
    runtime: str
    path: str
    size_bytes: int
    load_seconds: float
    latency_ms: dict[str, float]
    throughput_samples_per_s: float
    peak_memory_bytes: int
    metric: dict[str, Any]
    native: dict[str, Any] | None = None  # the runtime's own timing and delegation (dlcli.latency)
    python_overhead_ms: float | None = None  # harness p50 - native p50

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def add_native(self, native) -> None:
        if native is not None:
            self.native = native.to_json()
            if native.latency_ms:
                self.python_overhead_ms = round(self.latency_ms["p50"] - native.latency_ms["p50"], 4)


@dataclass
class BenchmarkResult:
    run_dir: Path
    batch_size: int
    runs: int
    results: list[Measure]
    threads: int = 1
    warmup: int = 10
    thresholds: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    memory_method: str = "VmHWM reset per model"

    def to_json(self) -> dict[str, Any]:
        return {"format": "dlcli-benchmark/1", "run_dir": str(self.run_dir.resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "batch_size": self.batch_size, "runs": self.runs,
                "threads": self.threads, "warmup": self.warmup,
                "memory_method": self.memory_method, "results": [r.to_json() for r in self.results],
                "thresholds": self.thresholds, "passed": not self.failures, "failures": self.failures}

    def raise_for_failures(self) -> None:
        if self.failures:
            raise ThresholdError(f"{len(self.failures)} threshold(s) missed: {'; '.join(self.failures)}")


class _KerasRunner:
    """The Keras model, called directly (no per-call predict() set-up)."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(self, x):
        return np.asarray(self.fn(x))


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _inputs(run, part: str | None = None, samples: int = 256):
    """(x, y) that every artifact answers: the held-out split (test, else validation, else
    train); a generator's (a GAN's, a VAE's decoder) fixed latents, y its Keras samples
    (the metric: sample_error)."""
    from dlcli.rundir import run_split

    if run.recipe.task != "gan" and part is None:
        return run_split(run, run.split_names()[-1])
    from dlcli.export.reference import latents_of, model_part

    model = model_part(run, part)
    x = latents_of(run, model, part)(samples, 13)
    return x, np.asarray(model.predict(x, verbose=0, batch_size=256))


def _measure(name, fmt, quant, runtime, path: Path, load, x: np.ndarray, y: np.ndarray, task: str,
             batch_size: int, runs: int, warmup: int) -> tuple[Measure, bool]:
    from dlcli.data.inputs import num_rows, take_rows
    from dlcli.export.parity import task_metric

    reset = _reset_peak()
    base_kb = _rss_kb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    runner = load()
    load_s = time.perf_counter() - t0
    n = num_rows(x)
    one = take_rows(x, slice(0, 1))
    for _ in range(warmup):
        runner.predict(one)
    lat = []
    for i in range(runs):
        xi = take_rows(x, slice(i % n, i % n + 1))
        t = time.perf_counter()
        runner.predict(xi)
        lat.append((time.perf_counter() - t) * 1000)
    batch = take_rows(x, np.arange(batch_size) % n)  # the first rows, repeated if the split is smaller
    runner.predict(batch)  # warm the batch shape
    reps = max(3, runs // 10)
    t = time.perf_counter()
    for _ in range(reps):
        runner.predict(batch)
    thr = reps * batch_size / (time.perf_counter() - t)
    pred = runner.predict(x)
    metric_name, value = task_metric(pred, y, task)
    peak_kb = _rss_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lat.sort()
    m = Measure(name, fmt, quant, runtime, str(path), _size(path), round(load_s, 4),
                {"p50": round(statistics.median(lat), 4), "p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 4),
                 "mean": round(statistics.fmean(lat), 4)},
                round(thr, 1), max(0, (peak_kb or 0) - (base_kb or 0)) * 1024, {"name": metric_name, "value": value})
    return m, reset


def _parse_fail_under(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--fail-under {item!r}: expected METRIC=VALUE, e.g. accuracy=0.95")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError as exc:
            raise UsageError(f"--fail-under {item!r}: {v!r} is not a number") from exc
    return out


def benchmark(paths: list[str | Path], batch_size: int = 32, runs: int = 100, warmup: int = 10,
              fail_under: list[str] | None = None, max_latency_ms: float | None = None,
              log=None, allow_code: bool = False, threads: int = 1, native: bool = True) -> BenchmarkResult:
    """``paths``: one run directory (the Keras model and every exported artifact in its
    manifest), or artifacts (.tflite, .onnx, SavedModel folders) of one run. ``threads``:
    the runtimes' CPU threads. ``native``: also time TFLite and ONNX artifacts in their
    runtimes' own loops (:mod:`dlcli.latency`), with the same warm-up and runs."""
    from dlcli import latency
    from dlcli.rundir import is_finished_run, run_split

    log = log or (lambda m: None)
    if batch_size < 1 or runs < 1 or threads < 1 or warmup < 0:
        raise UsageError("--batch-size, --runs and --threads must be at least 1, --warmup at least 0")
    thresholds = _parse_fail_under(fail_under or [])
    paths = [Path(p) for p in paths]
    whole_run = len(paths) == 1 and is_finished_run(paths[0])
    run, jobs = _run_jobs(paths[0], allow_code, threads) if whole_run else _artifact_jobs(paths, allow_code, threads)
    part = _part_of(paths, whole_run)
    inputs = {False: _inputs(run, part)}
    task = "gan" if part == "decoder" else run.recipe.task  # any generator: sample_error against Keras
    results = []
    method_ok = True
    for name, fmt, quant, runtime, path, load, raw in jobs:
        log(f"benchmarking {name} ...")
        if raw not in inputs:  # an artifact with the preprocessing inside takes the values before it
            inputs[raw] = run_split(run, run.split_names()[-1], normalize=False)
        x, y = inputs[raw]
        m, reset = _measure(name, fmt, quant, runtime, path, load, x, y, task, batch_size, runs, warmup)
        method_ok &= reset
        if native:
            m.add_native(latency.native(path, fmt, threads, warmup, runs))
        results.append(m)
    res = BenchmarkResult(run.path, batch_size, runs, results, threads, warmup,
                          {"fail_under": thresholds, "max_latency_ms": max_latency_ms},
                          memory_method="VmHWM reset per model" if method_ok else "ru_maxrss growth (cumulative)")
    res.failures += _missed(results, thresholds, max_latency_ms)
    if whole_run:
        write_json(run.path / "benchmark.json", res.to_json())
        from dlcli import tracking

        tracking.log_files(run.path, [run.path / "benchmark.json"], log=log)
    return res


def _run_jobs(path: Path, allow_code: bool, threads: int):
    """A run's Keras model and every passed artifact of its export manifest, as benchmark
    jobs: (name, format, quantization, runtime, path, loader, takes raw values)."""
    import json

    from dlcli.export.registry import format_of
    from dlcli.rundir import load_artifact, open_run

    run = open_run(path)
    jobs = [("keras", "keras", "none", "keras", run.model_path, lambda: _KerasRunner(run.load_model()), False)]
    manifest = run.path / "export" / "manifest.json"
    for a in json.loads(manifest.read_text())["artifacts"] if manifest.exists() else []:
        p = run.path / "export" / a["path"]
        if a["status"] == "passed" and p.exists():
            jobs.append((a["name"], a["format"], a["quantization"], format_of(p).runtime, p,
                         (lambda p=p: load_artifact(p, allow_code, threads)), a.get("preprocessing") == "included"))
    return run, jobs


def _artifact_jobs(paths: list[Path], allow_code: bool, threads: int):
    """Exported artifacts of one run, as benchmark jobs (see :func:`_run_jobs`)."""
    from dlcli.export.registry import format_of
    from dlcli.rundir import find_artifact_run, load_artifact, takes_raw

    run, jobs = None, []
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: not found")
        fmt = format_of(p)
        r = find_artifact_run(p)
        if run is not None and r.path.resolve() != run.path.resolve():
            raise UsageError(f"{p}: belongs to another run than {paths[0]}; benchmark one run at a time")
        run = r
        quant = next((q for q in ("int16x8", "int8", "float16", "dynamic") if q in p.name), "none")
        jobs.append((p.name, fmt.name, quant, fmt.runtime, p, (lambda p=p: load_artifact(p, allow_code, threads)),
                     takes_raw(p)))
    return run, jobs


def _part_of(paths: list[Path], whole_run: bool) -> str | None:
    """Which part of the run the artifacts are (``decoder``: a VAE's), one for all of them."""
    from dlcli.rundir import artifact_part

    parts = {None} if whole_run else {artifact_part(p) for p in paths}
    if len(parts) > 1:
        raise UsageError("a VAE's decoder and the run's model take different inputs: benchmark them separately")
    return parts.pop()


def _missed(results: list, thresholds: dict[str, float], max_latency_ms: float | None) -> list[str]:
    """Every --fail-under floor and --max-latency-ms ceiling a model missed."""
    failures = []
    for m in results:
        for metric, floor in thresholds.items():
            if metric != m.metric["name"]:
                if not any(metric == r.metric["name"] for r in results):
                    failures.append(f"{m.name}: no metric {metric!r} (have {m.metric['name']!r})")
                continue
            if m.metric["value"] < floor:
                failures.append(f"{m.name}: {metric} {m.metric['value']:.4f} < {floor:g}")
        if max_latency_ms is not None and m.latency_ms["p50"] > max_latency_ms:
            failures.append(f"{m.name}: p50 latency {m.latency_ms['p50']:.3f} ms > {max_latency_ms:g} ms")
    return failures
