"""``preflight(recipe, target) -> PreflightResult``: will the recipe's model run on a target?

Answered before training, in seconds: the model is built from the recipe with its initial
weights (shapes from the data), converted for the target in a child process (a converter
crash is one line, not a dead dlcli), and every op the target cannot run, or would run in
float, is listed with the layer and the recipe key that produced it and what to change.

Targets:
- ``tflite-int8``: full-integer TFLite. Converted allowing float fallback, so that every
  float op shows up at once instead of the converter stopping at the first.
- ``mcu``: the same file in TFLite Micro: every op must be an int8 builtin that TFLite
  Micro registers; the file is the flash, and TFLite Micro's recording allocator measures
  the tensor arena (RAM), both against ``--flash-kb`` / ``--ram-kb``
  (or ``export.target``).
- ``onnx-int8``: Keras's ONNX export quantized by onnxruntime (QDQ); every node left in float.
- ``gpu``: the float32 TFLite file (batch 1) against the op list of LiteRT's GPU accelerator
  (``dlcli/gpu_ops.py``); on a machine with a GPU adapter, LiteRT's own answer as well.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import TargetError, UsageError

TARGETS = ("tflite-int8", "mcu", "onnx-int8", "gpu")

# op -> what to change in the recipe; anything else: the generic advice below
ADVICE = {
    "GELU": "use activation: relu (TFLite Micro has no GELU kernel)",
    "ELU": "use activation: relu or leaky_relu (ELU has no int8 kernel: it runs in float)",
    "SELECT": "selu's select has no TFLite Micro kernel: use activation: relu or elu",
    "HARD_SWISH": "use activation: relu",
    "NEG": "NEG has no int8 kernel (LayerNormalization's variance uses it): use a model without it, or allow "
           "float fallback (export.int8_float_fallback: true; not on mcu)",
    "REDUCE_PROD": "a dynamic shape product runs in float: fix the sequence length, or allow float fallback",
}
FLEX = "a TensorFlow (Flex) op has no TFLite builtin: replace the layer"
# onnx-int8: ONNX op -> what to change (a float node costs a dequantize and a quantize around it)
ONNX_ADVICE = {
    "Erf": "GELU becomes Erf, which onnxruntime runs in float: use activation: relu",
    "Elu": "use activation: relu or leaky_relu",
    "Tanh": "tanh runs in float in onnxruntime's int8 graph: use activation: relu, or accept the float island",
}
ONNX_GENERIC = "onnxruntime's int8 quantizer has no kernel for it: it runs in float between DequantizeLinear " \
               "and QuantizeLinear; replace the layer or accept the float island"
GENERIC = "replace the layer, or allow float fallback (export.int8_float_fallback: true; not on mcu)"
# op -> activation names in a recipe that produce it (to name the key)
ACTIVATION_OPS = {"GELU": ("gelu",), "HARD_SWISH": ("hard_swish", "hard_silu"), "TANH": ("tanh",),
                  "LOGISTIC": ("sigmoid",), "ELU": ("elu",), "LEAKY_RELU": ("leaky_relu",), "EXP": ("exponential",)}


@dataclass
class Finding:
    op: str
    reasons: list[str]
    layers: list[str]
    keys: list[str]
    advice: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PreflightResult:
    recipe: str
    target: str
    ops: list[str]
    findings: list[Finding]
    model_bytes: int
    seconds: float
    arena: dict[str, Any] | None = None
    limits: dict[str, int | None] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    accelerator: dict[str, Any] | None = None  # gpu: what LiteRT's GPU accelerator said, where it could run

    @property
    def passed(self) -> bool:
        return not self.findings and not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "target": self.target, "passed": self.passed, "ops": self.ops,
                "findings": [f.to_json() for f in self.findings], "model_bytes": self.model_bytes,
                "arena": self.arena, "limits": self.limits, "failures": self.failures,
                "accelerator": self.accelerator, "seconds": round(self.seconds, 2)}

    def raise_for_failures(self) -> None:
        if not self.passed:
            what = [f"{f.op} ({', '.join(f.reasons)}; {', '.join(f.keys) or 'model'})" for f in self.findings]
            raise TargetError(f"{self.recipe}: the model cannot run on {self.target}: "
                              + "; ".join(what + self.failures))


def preflight(recipe, target: str, *, allow_code: bool = False, flash_kb: int | None = None,
              ram_kb: int | None = None, log=None, prepare=None) -> PreflightResult:
    """Build, convert and inspect ``recipe``'s model for ``target`` (see the module doc).
    ``prepare()``, if given, runs once the conversion child has started (the CLI imports
    TensorFlow quietly there, while the child imports its own)."""
    if target not in TARGETS:
        raise UsageError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    with _Child(target) as convert:  # started first: its TensorFlow import overlaps this process's
        if prepare is not None:
            prepare()
        model, keys, rep = _build(recipe, allow_code, log)
        log(f"converting for {target} in a child process ...")
        if target == "onnx-int8":
            return _onnx(recipe, model, keys, rep, t0, convert)
        if target == "gpu":
            return _gpu(recipe, model, keys, rep, t0, convert)
        tflite, _ = convert(model, rep)
    from dlcli import mcu

    info = mcu.inspect_model(tflite)
    findings = [_finding(op, reasons, target, info, keys, recipe) for op, reasons in sorted(info.offending.items())]
    findings = [f for f in findings if f.reasons]
    if any(f.op not in mcu.BOUNDARY for f in findings):  # (DE)QUANTIZE only bound the float islands found
        findings = [f for f in findings if f.op not in mcu.BOUNDARY]
    limits = {"flash_kb": flash_kb, "ram_kb": ram_kb}
    res = PreflightResult(_source_name(recipe), target, info.ops, findings, len(tflite), 0.0, limits=limits)
    if target == "mcu":
        _check_mcu(res, tflite, info, flash_kb, ram_kb)
    res.seconds = time.perf_counter() - t0
    return res


def _onnx(recipe, model, keys: dict[str, str], rep, t0: float, convert) -> PreflightResult:
    """onnx-int8: Keras's ONNX export, statically quantized by onnxruntime (QDQ) as dlcli
    exports it; every node left in float is a finding."""
    from dlcli.export.onnx import float_nodes

    data, _ = convert(model, rep)
    with tempfile.TemporaryDirectory(prefix="dlcli-preflight-") as tmp:
        path = Path(tmp) / "model_int8.onnx"
        path.write_bytes(data)
        ops, floats = float_nodes(path)
    findings = []
    for op, nodes in sorted(floats.items()):
        layers = sorted({_layer_of(n, keys) for n in nodes} - {None})
        found = _activation_keys({"Erf": "GELU", "Elu": "ELU", "Tanh": "TANH"}.get(op, op), recipe) or \
            sorted({keys[layer] for layer in layers if layer in keys})
        findings.append(Finding(op, ["runs in float"], layers, found, ONNX_ADVICE.get(op, ONNX_GENERIC)))
    return PreflightResult(_source_name(recipe), "onnx-int8", ops, findings, len(data), time.perf_counter() - t0)


def _gpu(recipe, model, keys: dict[str, str], rep, t0: float, convert) -> PreflightResult:
    """gpu: every op LiteRT's GPU accelerator has no kernel for (it would split the model and
    run them on the CPU); where the machine has a GPU adapter, LiteRT's own verdict too."""
    from dlcli.gpu_ops import ADVICE, GENERIC, inspect_gpu

    data, probe = convert(model, rep)
    info = inspect_gpu(data)
    findings = []
    for op, reasons in sorted(info.offending.items()):
        layers = sorted({_layer_of(name, keys) for name in info.tensors.get(op, ())} - {None})
        found = sorted({keys[layer] for layer in layers if layer in keys})
        findings.append(Finding(op, sorted(reasons), layers, found,
                                FLEX if op.startswith("Flex") else ADVICE.get(op, GENERIC)))
    res = PreflightResult(_source_name(recipe), "gpu", info.ops, findings, len(data), 0.0, accelerator=probe)
    if probe.get("fully_accelerated") is False and not findings:
        res.failures.append("LiteRT's GPU accelerator does not take the whole model on this machine's GPU "
                            "(a per-op limit: rank, version or broadcasting)")
    res.seconds = time.perf_counter() - t0
    return res


def _source_name(recipe) -> str:
    return str(getattr(getattr(recipe, "_source", None), "file", recipe.name))


def _build(recipe, allow_code: bool, log):
    """The recipe's model with its initial weights, {layer name: recipe key}, and a few
    preprocessed training rows to calibrate int8 ranges."""
    import numpy as np

    from dlcli.data import load_data
    from dlcli.data.inputs import num_rows, take_rows
    from dlcli.models import build_model, context_from_data

    log("reading the data for its shapes ...")
    bundle = load_data(recipe)
    ctx = context_from_data(recipe, bundle)
    model = build_model(recipe, ctx, allow_code=allow_code)
    train = bundle.train
    if train.streamed:
        x = next(iter(train.dataset(64).as_numpy_iterator()))[0]
    else:
        x = train.x
    rep = take_rows(x, np.arange(min(64, num_rows(x))))
    return model, layer_keys(recipe, model), rep


def layer_keys(recipe, model) -> dict[str, str]:
    """Keras layer name -> the recipe key that made it (``model.layers.3``,
    ``model.graph.nodes.2``); architectures name their whole ``model`` section."""
    spec = recipe.model
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if hasattr(spec, "layers"):
        return {layer.name: f"model.layers.{i}" for i, layer in enumerate(layers[:len(spec.layers)])}
    if hasattr(spec, "graph"):
        index = {node.name: i for i, node in enumerate(spec.graph.nodes)}
        return {n: f"model.graph.nodes.{i}" for n, i in index.items()}
    kind = getattr(spec, "architecture", None) or getattr(spec, "application", None) or "code"
    return {layer.name: f"model (architecture {kind})" for layer in layers}


def _finding(op: str, reasons: set[str], target: str, info, keys: dict[str, str], recipe) -> Finding:
    if target != "mcu":  # LiteRT runs every builtin, resource variables too: only float and non-builtin ops count
        reasons = {r for r in reasons if "float" in r or r.endswith(" op")}
    layers = sorted({_layer_of(name, keys) for name in info.tensors.get(op, ())} - {None})
    found = sorted({keys[layer] for layer in layers if layer in keys})
    found = _activation_keys(op, recipe) or found
    advice = FLEX if op.startswith("Flex") else ADVICE.get(op, GENERIC)
    return Finding(op, sorted(reasons), layers, found, advice)


def _layer_of(tensor_name: str, keys: dict[str, str]) -> str | None:
    """The Keras layer a converted tensor came from: its name holds the layer's name as one
    path segment (``serving_default/sequential_1/dense_1/Relu``)."""
    for part in tensor_name.replace(";", "/").split("/"):
        for name in (part, part.rsplit("_", 1)[0] if part.rsplit("_", 1)[-1].isdigit() else None):
            if name in keys:  # Keras's name scopes add "_1" to a layer's name
                return name
    return None


def _activation_keys(op: str, recipe) -> list[str]:
    """The recipe keys whose value names the activation that became ``op``."""
    names = ACTIVATION_OPS.get(op)
    if not names:
        return []
    found: list[str] = []

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}.{i}")
        elif isinstance(value, str) and value.lower() in names:
            found.append(path)

    walk(recipe.model.model_dump(mode="json", exclude_none=True), "model")
    return found


def _check_mcu(res: PreflightResult, tflite: bytes, info, flash_kb: int | None, ram_kb: int | None) -> None:
    from dlcli import mcu

    if flash_kb is not None and len(tflite) > flash_kb * 1024:
        res.failures.append(f"flash: the model is {len(tflite) / 1024:.1f} KiB, over the {flash_kb} KiB limit "
                            "(fewer or narrower layers, or prune)")
    if res.findings:
        return  # TFLite Micro cannot run it: no arena to measure
    mcu.tflm_runtime()  # not installed: exit 2 with the install line, not "the target cannot run it"
    try:
        res.arena = mcu.measure_arena(tflite, info, "the model")
    except UsageError as exc:
        res.failures.append(str(exc))
        return
    if ram_kb is not None and res.arena["recommended_bytes"] > ram_kb * 1024:
        res.failures.append(f"ram: the tensor arena needs {res.arena['recommended_bytes'] / 1024:.0f} KiB, over "
                            f"the {ram_kb} KiB limit (smaller inputs or fewer filters)")


class _Child:
    """The conversion child, ``python -m dlcli.preflight FOLDER TARGET``: a converter crash
    kills it, not dlcli. Started before the parent builds the model, it imports TensorFlow
    meanwhile (on two cores, the two imports overlap) and converts when a line on its stdin
    says so; leaving the block early kills it. ``with _Child(t) as convert``: ``convert(model,
    rep)`` gives int8 TFLite bytes (onnx-int8: QDQ int8 ONNX; gpu: float32 TFLite) and, for
    gpu, what LiteRT's GPU accelerator said."""

    def __init__(self, target: str):
        self.target = target

    def __enter__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="dlcli-preflight-")
        self.folder = Path(self.tmp.name)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen([sys.executable, "-m", "dlcli.preflight", str(self.folder), self.target],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        return self.convert

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self.tmp.cleanup()

    def convert(self, model, rep) -> tuple[bytes, dict[str, Any]]:
        import json

        import numpy as np

        model.save(self.folder / "model.keras")
        arrays = rep if isinstance(rep, dict) else {"__x__": rep}
        np.savez(self.folder / "rep.npz", **arrays)
        _, stderr = self.proc.communicate("convert\n")
        out = self.folder / "model.out"
        tool = "ONNX exporter or onnxruntime's quantizer" if self.target == "onnx-int8" else "TFLite converter"
        if self.proc.returncode < 0:
            raise TargetError(f"the {tool} crashed (signal {-self.proc.returncode}) on this model")
        if self.proc.returncode != 0 or not out.exists():
            error = self.folder / "error.txt"
            why = error.read_text(encoding="utf-8") if error.exists() else (stderr.strip().splitlines() or
                                                                            ["no output"])[-1]
            raise TargetError(f"the {tool} cannot convert this model"
                              f"{'' if self.target == 'gpu' else ' to int8'}: {why}")
        probe = self.folder / "probe.json"
        return out.read_bytes(), json.loads(probe.read_text(encoding="utf-8")) if probe.exists() else {}


def _child(folder: Path, target: str) -> int:
    """In the child: load the model (safe mode), convert to int8 allowing float fallback
    (onnx-int8: export to ONNX and quantize it as ``dlcli export --onnx-quantize int8`` does;
    gpu: float32, batch 1, then ask LiteRT's GPU accelerator)."""
    import json

    import keras
    import numpy as np

    import dlcli.models.custom_layers  # noqa: F401 - registers dlcli's layers for loading
    from dlcli.export import Plan
    from dlcli.export.tflite import convert

    if sys.stdin.readline().strip() != "convert":  # the parent stopped before converting
        return 0
    try:
        model = keras.saving.load_model(folder / "model.keras", safe_mode=True, compile=False)
        with np.load(folder / "rep.npz", allow_pickle=False) as z:
            rep = {k: z[k] for k in z.files}
        rep = rep["__x__"] if set(rep) == {"__x__"} else rep
        if target == "onnx-int8":
            from dlcli.export.onnx import export as onnx_export

            onnx_export(model, folder / "model.out", Plan("int8", rep))
        elif target == "gpu":
            data = convert(model, Plan("none", rep, 1))
            (folder / "model.out").write_bytes(data)
            (folder / "probe.json").write_text(json.dumps(_probe_gpu(data)), encoding="utf-8")
        else:
            (folder / "model.out").write_bytes(convert(model, Plan("int8", rep, 1, True)))
    except Exception as exc:  # noqa: BLE001 - the converter's message is the answer
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        (folder / "error.txt").write_text(f"{type(exc).__name__}: {lines[0][:300] if lines else ''}",
                                          encoding="utf-8")
        return 3
    return 0


def _probe_gpu(data: bytes) -> dict[str, Any]:
    """LiteRT's own answer where it finds a GPU adapter (WebGPU / OpenCL); none on most CI machines."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    try:
        model = CompiledModel.from_buffer(data, hardware_accel=HardwareAccelerator.GPU)
    except (RuntimeError, ValueError, OSError):  # LiteRT's message is a source location; its log says why
        return {"accelerator": "LiteRT GPU", "checked": False,
                "why": "LiteRT found no GPU it can use on this machine: checked against the op list only"}
    return {"accelerator": "LiteRT GPU", "checked": True, "fully_accelerated": bool(model.is_fully_accelerated())}


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "tflite-int8"))
