"""Latency as the runtime itself measures it, and what the runtime's accelerator runs.

``dlcli benchmark`` times each artifact twice:

- through dlcli's Python harness (NumPy in, NumPy out: what an application written in
  Python pays), the figure it always gave;
- *natively*: TFLite through LiteRT's ``CompiledModel`` with its input and output buffers
  created once (what ``litert-benchmark`` does), ONNX through onnxruntime with its inputs
  bound once as ``OrtValue`` s (``run_with_iobinding``: no NumPy conversion per call).
  onnxruntime's session profiler was tried first: its per-node events cost more than a
  small model's whole run (1.2 ms against 0.13 ms through Python for the digits
  transformer), so it is not a latency figure.

The difference is the Python overhead. Delegation: LiteRT says whether the model is
fully accelerated (XNNPACK on CPU); the ops that fall back to the plain kernels are read
from the XNNPACK partition of the classic interpreter. ONNX runs on onnxruntime's CPU
execution provider, which runs every node.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.errors import TargetError


@dataclass
class Native:
    tool: str
    threads: int
    warmup: int
    runs: int
    latency_ms: dict[str, float]
    accelerator: str
    fully_accelerated: bool | None
    fallback_ops: list[str] = field(default_factory=list)
    skipped: str | None = None  # why there is no figure (latency_ms is then empty)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _stats(times_ms: list[float]) -> dict[str, float]:
    s = sorted(times_ms)
    return {"p50": round(statistics.median(s), 4), "p95": round(s[min(len(s) - 1, int(0.95 * len(s)))], 4),
            "mean": round(statistics.fmean(s), 4)}


def _random_input(dtype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Random values of the tensor's type, as litert-benchmark feeds (latency does not
    depend on them for these models); integer ids are 0, the one id every embedding holds
    (a random one past the table's end makes the lookup fail)."""
    shape = [max(1, int(d)) for d in shape]
    if dtype.startswith("float"):
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype in ("int32", "int64"):  # ids (tokens, categories, a generator's class): 0 is valid for every embedding
        return np.zeros(shape, dtype=dtype)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


@contextmanager
def _compiled(path: Path, threads: int):
    """A LiteRT ``CompiledModel`` on the CPU accelerator, closed (with its environment) on
    exit, so LiteRT's teardown happens while the caller still silences native output."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.environment import Environment, EnvironmentOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    env = Environment.create(options=EnvironmentOptions())
    model = None
    try:
        opts = Options(hardware_accelerators=HardwareAccelerator(HardwareAccelerator.CPU),
                       cpu_options=CpuOptions(num_threads=threads))
        model = CompiledModel.from_file(str(path), environment=env, options=opts)
        yield model
    finally:
        if model is not None:
            model.close()
        env.close()


XNNPACK = "XNNPACK (CPU)"


def delegation(path: Path) -> dict[str, Any]:
    """Whether LiteRT's CPU accelerator (XNNPACK) runs the whole TFLite model, and the ops
    it leaves to the plain kernels. Recorded in the export manifest; never raises."""
    try:
        with _compiled(path, 1) as model:
            full = bool(model.is_fully_accelerated())
        return {"accelerator": XNNPACK, "fully_accelerated": full,
                "fallback_ops": [] if full else xnnpack_fallback_ops(path)}
    except (RuntimeError, ValueError, OSError) as exc:
        return {"accelerator": XNNPACK, "fully_accelerated": None, "fallback_ops": [],
                "error": f"LiteRT could not compile it: {' '.join(str(exc).split())}"}


# what LiteRT's Python TensorBuffer can hold (ai_edge_litert.tensor_buffer): no int16, no int64
BUFFER_DTYPES = ("float32", "float16", "bfloat16", "int32", "int8", "uint8", "bool")


def tflite(path: Path, threads: int = 1, warmup: int = 50, runs: int = 500) -> Native:
    """LiteRT ``CompiledModel`` on the CPU accelerator (XNNPACK), buffers reused across runs.
    A model whose inputs or outputs LiteRT's Python buffers cannot hold (int16x8's int16)
    gets no figure and says why."""
    try:
        with _compiled(path, threads) as model:
            unheld = _unheld_dtypes(model)
            full = bool(model.is_fully_accelerated())
            times = [] if unheld else _time_compiled(model, warmup, runs)
    except (RuntimeError, ValueError, OSError) as exc:
        if "full" not in locals():  # not even compiled: the file is at fault
            raise TargetError(f"{path}: LiteRT could not run it natively: {exc}") from exc
        # compiled, but LiteRT's buffers refuse it (e.g. an output that aliases a reshaped tensor)
        return Native("litert CompiledModel", threads, warmup, runs, {}, XNNPACK, full,
                      [] if full else xnnpack_fallback_ops(path),
                      f"LiteRT's CompiledModel could not run it: {' '.join(str(exc).split())[:200]}")
    skipped = f"LiteRT's Python buffers cannot hold {'/'.join(unheld)} inputs or outputs" if unheld else None
    return Native("litert CompiledModel", threads, warmup, runs, _stats(times) if times else {}, XNNPACK, full,
                  [] if full else xnnpack_fallback_ops(path), skipped)


def _unheld_dtypes(model) -> list[str]:
    sig = next(iter(model.get_signature_list()), "serving_default")
    details = [*model.get_input_tensor_details(sig).values(), *model.get_output_tensor_details(sig).values()]
    return sorted({str(d.get("dtype")) for d in details} - set(BUFFER_DTYPES))


def _time_compiled(model, warmup: int, runs: int) -> list[float]:
    sig = next(iter(model.get_signature_list()), "serving_default")
    details = model.get_input_tensor_details(sig)
    ins = {n: model.create_input_buffer_by_name(sig, n) for n in details}
    outs = {n: model.create_output_buffer_by_name(sig, n) for n in model.get_output_tensor_details(sig)}
    rng = np.random.default_rng(0)
    for n, buf in ins.items():
        buf.write(_random_input(details[n].get("dtype", "float32"), details[n].get("shape", [1]), rng))
    times = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        model.run_by_name(sig, ins, outs)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1000)
    return times


def xnnpack_fallback_ops(path: Path) -> list[str]:
    """The op types the XNNPACK delegate leaves to the plain TFLite kernels, in graph order.

    The classic interpreter replaces each delegated partition with one DELEGATE node whose
    inputs and outputs are the partition's boundary: an op belongs to a partition when one
    of its outputs is reached walking back from the partition's outputs without crossing
    its inputs."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    ops = it._get_ops_details()
    producer = {int(t): op["index"] for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    by_index = {op["index"]: op for op in ops}
    delegated: set[int] = set()
    for node in (op for op in ops if op["op_name"] == "DELEGATE"):
        stop = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            t = stack.pop()
            i = producer.get(t)
            if t in stop or i is None or i in delegated:
                continue
            delegated.add(i)
            stack += [int(u) for u in by_index[i]["inputs"] if int(u) >= 0]
    left = [op["op_name"] for op in ops if op["op_name"] != "DELEGATE" and op["index"] not in delegated]
    return list(dict.fromkeys(left))  # each op type once, in graph order


def onnx(path: Path, threads: int = 1, warmup: int = 50, runs: int = 500) -> Native:
    """onnxruntime with its inputs bound once as OrtValues (``run_with_iobinding``): each call
    runs the graph with no NumPy conversion in or out, the runtime's own loop body."""
    import onnxruntime as ort

    from dlcli.export.onnx import _ORT_TYPES

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        binding = sess.io_binding()
        for i in sess.get_inputs():
            x = _random_input(_ORT_TYPES.get(i.type, "float32"), [d if isinstance(d, int) else 1 for d in i.shape], rng)
            binding.bind_ortvalue_input(i.name, ort.OrtValue.ortvalue_from_numpy(x))
        for o in sess.get_outputs():
            binding.bind_output(o.name)
        times = []
        for k in range(warmup + runs):
            t = time.perf_counter()
            sess.run_with_iobinding(binding)
            if k >= warmup:
                times.append((time.perf_counter() - t) * 1000)
    except (RuntimeError, ValueError, OSError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        raise TargetError(f"{path}: onnxruntime could not run it natively: {' '.join(str(exc).split())}") from exc
    return Native("onnxruntime io_binding", threads, warmup, runs, _stats(times), "CPUExecutionProvider", None, [])


def native(path: Path, fmt: str, threads: int = 1, warmup: int = 50, runs: int = 500) -> Native | None:
    """The runtime's own latency of an artifact, or None for a format without one (Keras, SavedModel)."""
    if fmt == "tflite":
        return tflite(path, threads, warmup, runs)
    if fmt == "onnx":
        return onnx(path, threads, warmup, runs)
    return None


def delegation_text(native: dict[str, Any] | None) -> str:
    """'full (XNNPACK (CPU))', 'partial: SOFTMAX on plain kernels', or '-' (``native``: a
    :meth:`Native.to_json` or a manifest's ``delegation``; read from files, so any shape)."""
    if not isinstance(native, dict):
        return "-"
    accelerator = str(native.get("accelerator", "?"))
    if native.get("fully_accelerated") is None:
        return str(native.get("error") or accelerator)
    if native.get("fully_accelerated"):
        return f"full ({accelerator})"
    ops = native.get("fallback_ops")
    return f"partial: {', '.join(map(str, ops)) if isinstance(ops, list) and ops else 'some ops'} on plain kernels"
