"""Microcontroller (TFLite Micro) files for a full-integer int8 TFLite model.

``check_full_integer(model_bytes)`` reads the flatbuffer (every subgraph, operator and
tensor type) and refuses anything a microcontroller build cannot run as int8: float
tensors (float fallback ops, float inputs / outputs), Flex and custom ops, and
builtins TFLite Micro's ``MicroMutableOpResolver`` has no ``Add...()`` method for.
``measure_arena`` runs the model once in TFLite Micro's Python interpreter and reads
the arena its recording allocator used. ``c_files`` writes ``model_data.h`` /
``model_data.cc`` (the model as an ``alignas(16)`` byte array) and ``ops.h`` (the
resolver registrations).

Imports nothing heavy at module level; TensorFlow is never needed here.
"""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from dlcli.errors import UsageError, raise_if_bug

# TFLite builtin operator -> the MicroMutableOpResolver method that registers it
# (tensorflow/lite/micro/micro_mutable_op_resolver.h). Not derivable from the name:
# BATCH_MATMUL -> AddBatchMatMul, CUMSUM -> AddCumSum, ..._LSTM -> ...LSTM.
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill",
    "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish", "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack", "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}

# int8 activations and weights; int32 biases, shapes and token ids; integer and boolean helper
# tensors (index clipping, comparisons). Anything else (float32 / float16 ...) is a float op.
INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "BOOL")
ARENA_MARGIN = 1.25  # on top of the measured arena ...
ARENA_EXTRA = 1024  # ... plus the interpreter's own objects, rounded up to whole KiB


@dataclass
class ModelInfo:
    ops: list[str]  # builtin names, first-use order
    activation_bytes: int  # sum of the sizes of all non-constant tensors (no buffer reuse, no overhead)
    offending: dict[str, set[str]] = field(default_factory=dict)  # op -> reasons
    tensors: dict[str, set[str]] = field(default_factory=dict)  # offending op -> names of its output tensors
    constants: dict[str, int] = field(default_factory=dict)  # tensor type -> constant (weight) tensors of it


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def inspect_model(model: bytes) -> ModelInfo:
    """Operators (in first-use order), offending ones with reasons, and activation bytes."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    except Exception as exc:  # a corrupt flatbuffer is the user's file
        raise_if_bug(exc)
        raise UsageError(f"not a readable TFLite model: {type(exc).__name__}: {exc}") from exc
    op_names, type_names = _enum_names(schema.BuiltinOperator), _enum_names(schema.TensorType)
    sizes = {"INT8": 1, "UINT8": 1, "BOOL": 1, "INT16": 2, "FLOAT16": 2, "INT32": 4, "FLOAT32": 4, "INT64": 8,
             "FLOAT64": 8}
    info = ModelInfo([], 0)
    for sg in m.subgraphs or []:
        tensors = sg.tensors or []
        for t in tensors:
            buf = m.buffers[t.buffer] if m.buffers is not None and t.buffer < len(m.buffers) else None
            if buf is not None and buf.data is not None and len(buf.data) > 0:
                kind = type_names.get(t.type, "")
                info.constants[kind] = info.constants.get(kind, 0) + 1
            else:  # not a constant
                n = 1
                for d in (t.shape if t.shape is not None else []):
                    n *= max(int(d), 1)
                info.activation_bytes += n * sizes.get(type_names.get(t.type, ""), 4)
        for op in sg.operators or []:
            code = m.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
            reasons: set[str] = set()
            if name == "CUSTOM":
                custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
                kind = "Flex (TensorFlow) op" if custom.startswith("Flex") else "custom op"
                name, reasons = custom, {kind}
            elif name not in RESOLVER_METHODS:
                reasons.add("not in TFLite Micro's op resolver")
            idx = [i for i in list(op.inputs if op.inputs is not None else []) +
                   list(op.outputs if op.outputs is not None else []) if i >= 0]
            types = {type_names.get(tensors[i].type, str(tensors[i].type)) for i in idx}
            bad = sorted(t for t in types if t not in INTEGER_TYPES)
            if bad:
                reasons.add(f"{'/'.join(t.lower() for t in bad)} tensors")
            if name not in info.ops:
                info.ops.append(name)
            if reasons:
                info.offending.setdefault(name, set()).update(reasons)
                info.tensors.setdefault(name, set()).update(
                    _name(tensors[i].name) for i in (op.outputs if op.outputs is not None else []) if i >= 0)
    return info


BOUNDARY = ("QUANTIZE", "DEQUANTIZE")


def float_ops(info: ModelInfo) -> list[str]:
    """The ops with float tensors in an int8 model, without the QUANTIZE / DEQUANTIZE that
    only bound them (those alone are listed when nothing else is float)."""
    ops = [op for op, reasons in info.offending.items() if any("float" in r for r in reasons)]
    inner = [op for op in ops if op not in BOUNDARY]
    return inner or ops


def _name(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def check_full_integer(model: bytes, label: str, fell_back: list[str] | None = None) -> ModelInfo:
    """The model's info, or a UsageError naming every op that is not an int8 builtin.
    ``fell_back``: the layers an export's --fallback auto kept in float (the advice says so)."""
    info = inspect_model(model)
    if info.offending and fell_back:
        raise UsageError(
            f"--target mcu needs a full-integer int8 model; {label} keeps {len(fell_back)} layer(s) in float because "
            "--fallback auto did so to pass the parity gate (the plain int8 file failed it). Re-export without "
            "--fallback and loosen the gate, or change what quantizes badly (`dlcli export --explain` ranks the "
            "layers; a raw, unnormalized input is the usual cause)")
    if info.offending:
        ops = ", ".join(f"{op} ({', '.join(sorted(r))})" for op, r in sorted(info.offending.items()))
        raise UsageError(
            f"--target mcu needs a full-integer int8 model; {label} has ops that are not int8 TFLite Micro "
            f"builtins: {ops}. These come from the model's layers (the converter leaves ops without an int8 "
            "kernel in float, with or without --int8-float-fallback): change those layers; "
            "`dlcli validate RECIPE --target mcu` names the recipe key of each, before training")
    return info


@contextlib.contextmanager
def _capture_fd2():
    """Collect what native code writes on fd 2 (TFLite Micro's MicroPrintf)."""
    from dlcli.stdio import redirect_fd2

    out: dict[str, str] = {"text": ""}
    with tempfile.TemporaryFile() as tmp:
        try:
            with redirect_fd2(tmp):
                yield out
        finally:
            tmp.seek(0)
            out["text"] = tmp.read().decode("utf-8", "replace")


def tflm_runtime():
    """TFLite Micro's Python interpreter module, or a UsageError saying how to install it
    (a missing package is a set-up problem, not a model the target cannot run)."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise UsageError("--target mcu needs TFLite Micro's Python interpreter: "
                         "pip install --pre tflite-micro (or pip install 'dlcli[mcu]')") from exc
    return runtime


def _tflm_run(model: bytes, arena_size: int, record: bool, label: str) -> tuple[Any, str]:
    import numpy as np

    runtime = tflm_runtime()

    with _capture_fd2() as log:
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
            d = interp.get_input_details(0)
            interp.set_input(np.zeros(d["shape"], d["dtype"]), 0)
            interp.invoke()
            out = interp.get_output(0).copy()
            if record:
                interp.print_allocations()
            err = None
        except (RuntimeError, ValueError) as exc:
            out, err = None, exc
    if err is not None:
        lines = [ln.strip() for ln in log["text"].splitlines() if ln.strip()]
        why = "; ".join(lines[-2:]) if lines else str(err)
        raise UsageError(f"--target mcu: TFLite Micro cannot run {label} (arena {arena_size} bytes): {why}")
    return out, log["text"]


def measure_arena(model: bytes, info: ModelInfo, label: str) -> dict[str, Any]:
    """Run once in TFLite Micro's Python interpreter with a generous arena, read the bytes its
    recording allocator used, add a margin, and check the model runs in exactly that size."""
    generous = max(10 * len(model), 4 * info.activation_bytes + 64 * 1024)
    _, log = _tflm_run(model, generous, record=True, label=label)
    m = re.search(r"Arena allocation total (\d+) bytes", log)
    if not m:
        raise UsageError("--target mcu: TFLite Micro's recording allocator reported no arena usage")
    measured = int(m.group(1))
    size = -(-int(measured * ARENA_MARGIN + ARENA_EXTRA) // 1024) * 1024
    for _ in range(4):  # the margin covers the host interpreter; grow it if it ever does not
        try:
            _tflm_run(model, size, record=False, label=label)
            break
        except UsageError:
            size *= 2
    else:
        raise UsageError(f"--target mcu: TFLite Micro did not run in {size} bytes though it measured {measured}")
    return {"method": "measured", "measured_bytes": measured, "recommended_bytes": size,
            "activation_bytes": info.activation_bytes,
            "note": f"TFLite Micro recording allocator (Python interpreter, {sys.platform} host) "
                    f"+ {round((ARENA_MARGIN - 1) * 100)}% + {ARENA_EXTRA} bytes, rounded up to 1 KiB; "
                    "the model ran on the host in exactly recommended_bytes"}


def _c_float(x: float) -> str:
    s = f"{x:.9g}"
    return (s if any(c in s for c in ".e") else s + ".0") + "f"


def c_files(model: bytes, model_name: str, sha256: str, info: ModelInfo, arena: dict[str, Any],
            inputs: list[dict], outputs: list[dict], version: str) -> dict[str, bytes]:
    """``model_data.h``, ``model_data.cc`` and ``ops.h`` for ``model``."""
    head = f"// Generated by dlcli {version} from {model_name} (sha256 {sha256}). Do not edit.\n"

    def elements(t: dict) -> int:
        n = 1
        for d in t["shape"]:
            n *= d if d else 1  # the batch dimension is 1 on a microcontroller
        return n

    def io(prefix: str, t: dict) -> list[str]:
        lines = [f"// {prefix.lower()} '{t['name']}': {t['dtype']} {[d or 1 for d in t['shape']]}",
                 f"constexpr int k{prefix}Size = {elements(t)};"]
        if t.get("scale") is not None:
            lines += [f"constexpr float k{prefix}Scale = {_c_float(t['scale'])};",
                      f"constexpr int k{prefix}ZeroPoint = {int(t['zero_point'])};"]
        return lines

    h = [head.rstrip(), "#ifndef DLCLI_MODEL_DATA_H_", "#define DLCLI_MODEL_DATA_H_", "",
         f"// {model_name}: a TFLite flatbuffer, 16-byte aligned as TFLite Micro requires.",
         "extern const unsigned char g_model_data[];", "extern const unsigned int g_model_data_len;", "",
         f"// Tensor arena: {arena['measured_bytes']} bytes measured by TFLite Micro's recording allocator,",
         "// with a margin (see README.md).", f"constexpr unsigned int kTensorArenaSize = {arena['recommended_bytes']};",
         "", "// real value = (quantized - zero_point) * scale", *io("Input", inputs[0]), *io("Output", outputs[0]),
         "", "#endif  // DLCLI_MODEL_DATA_H_", ""]
    rows = [", ".join(f"0x{b:02x}" for b in model[i:i + 12]) for i in range(0, len(model), 12)]
    cc = [head.rstrip(), '#include "model_data.h"', "", "alignas(16) const unsigned char g_model_data[] = {",
          *(f"    {r}," for r in rows), "};", f"const unsigned int g_model_data_len = {len(model)};", ""]
    ops = [head.rstrip(), "#ifndef DLCLI_OPS_H_", "#define DLCLI_OPS_H_", "",
           '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"', "",
           f"// The {len(info.ops)} operators of {model_name}.", f"constexpr unsigned int kNumOps = {len(info.ops)};",
           "using ModelOpResolver = tflite::MicroMutableOpResolver<kNumOps>;", "",
           "inline TfLiteStatus RegisterOps(ModelOpResolver& resolver) {",
           *(f"  TF_LITE_ENSURE_STATUS(resolver.{RESOLVER_METHODS[op]}());  // {op}" for op in info.ops),
           "  return kTfLiteOk;", "}", "", "#endif  // DLCLI_OPS_H_", ""]
    return {"model_data.h": "\n".join(h).encode(), "model_data.cc": "\n".join(cc).encode(),
            "ops.h": "\n".join(ops).encode()}


def readme_section(entry: dict[str, Any], arena: dict[str, Any]) -> list[str]:
    """The C++ part of an mcu package's README: files, a TFLite Micro example, the arena."""
    q_in = entry["inputs"][0].get("scale") is not None
    q_out = entry["outputs"][0].get("scale") is not None
    fill = ("""  for (int i = 0; i < kInputSize; ++i) {  // quantize: q = round(x / scale) + zero_point
    int32_t q = static_cast<int32_t>(std::lround(features[i] / kInputScale)) + kInputZeroPoint;
    input->data.int8[i] = static_cast<int8_t>(q < -128 ? -128 : (q > 127 ? 127 : q));
  }""" if q_in else """  for (int i = 0; i < kInputSize; ++i) input->data.i32[i] = token_ids[i];""")
    read = ("""  for (int i = 0; i < kOutputSize; ++i) {  // dequantize: x = (q - zero_point) * scale
    scores[i] = (output->data.int8[i] - kOutputZeroPoint) * kOutputScale;
  }""" if q_out else """  for (int i = 0; i < kOutputSize; ++i) scores[i] = output->data.int8[i];""")
    arg = "const float* features" if q_in else "const int32_t* token_ids"
    from dlcli.package_example import template

    code = template("mcu_example.cc").substitute(arg=arg, fill=fill, read=read).split("\n", 1)[1]
    return [
        "## C++ (TFLite Micro)", "",
        ("Add `model_data.cc`, `model_data.h` and `ops.h` to a project that builds TFLite Micro "
        "(github.com/tensorflow/tflite-micro). `ops.h` registers exactly the "
        f"{entry['name']} operators with `tflite::MicroMutableOpResolver<kNumOps>`; `model_data.h` holds the "
        "arena size and the input / output scale and zero point."), "",
        "```cpp", code.rstrip(), "```", "",
        "## Tensor arena", "",
        (f"`kTensorArenaSize` = **{arena['recommended_bytes']} bytes**. Measured, not estimated: TFLite Micro's "
        f"recording allocator (its Python interpreter, `print_allocations()`) used {arena['measured_bytes']} bytes "
        f"for this model on the packaging host; dlcli adds {round((ARENA_MARGIN - 1) * 100)}% and {ARENA_EXTRA} "
        "bytes for the interpreter's own objects, rounds up to a KiB, and checks the model runs in exactly that "
        "size. On a 32-bit microcontroller pointers and structs are smaller, so it usually needs a little less; "
        "optimized kernels (CMSIS-NN, ESP-NN) can need extra scratch memory: if `AllocateTensors()` fails, "
        "raise the size."), "",
    ]
