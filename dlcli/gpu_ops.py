"""Which ops of a float TFLite model LiteRT's GPU accelerator can take (``--target gpu``).

LiteRT's GPU accelerator (ML Drift, shipped in ai-edge-litert as the WebGPU / GPU accelerator
libraries) decides node by node in ``IsNodeSupported`` (``ml_drift_delegate/tflite/support/
support.cc``); ``GPU_OPS`` below is that function's list of builtin ops, read on 2026-12-02
against ai-edge-litert 2.x. LSTM is listed there but always refused (``return false`` in that
version), so it is left out here. Not checked here: the bool-tensor and quantized-tensor
switches (the caller's options; dlcli converts a float model for this target) and the
per-op limits (tensor ranks, op versions, broadcasting). On a machine with a GPU adapter
the pre-flight also asks LiteRT itself (``CompiledModel`` on the GPU accelerator) whether
the whole model is accelerated.

TensorFlow's ``tf.lite.experimental.Analyzer(gpu_compatibility=True)`` was tried first: in
TF 2.21 it reports TOPK_V2, REVERSE_V2 and WHILE models alike as compatible, so it is not used.
"""

from __future__ import annotations

from dlcli.mcu import ModelInfo

_LISTED = """
ABS ADD ARG_MAX ATAN2 AVERAGE_POOL_2D BATCH_MATMUL BITCAST BITWISE_XOR CAST CEIL CONCATENATION
CONV_2D COS CUMSUM DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
EMBEDDING_LOOKUP EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER
GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC
MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT PACK PAD PADV2 POW PRELU
QUANTIZE REDUCE_ALL REDUCE_ANY REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU6 RELU RELU_N1_TO_1 RESHAPE
RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 RIGHT_SHIFT ROUND RSQRT SELECT SELECT_V2 SIGN SIN
SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STABLEHLO_BROADCAST_IN_DIM
STABLEHLO_CBRT STABLEHLO_CLAMP STABLEHLO_COMPOSITE STABLEHLO_REMAINDER STABLEHLO_SHIFT_LEFT
STRIDED_SLICE SUB SUM TANH TILE TOPK_V2 TRANSPOSE TRANSPOSE_CONV UNPACK
"""
GPU_OPS = frozenset(_LISTED.split())

# custom ops ML Drift parses itself
GPU_CUSTOM = frozenset({"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "Resampler"})

RECURRENT = ("WHILE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM",
             "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN")

ADVICE = {op: "a recurrent layer runs on the CPU beside the GPU (LiteRT's GPU accelerator has no loop or "
              "sequence-LSTM kernel): use Conv1D or attention blocks for a GPU target, or accept the split"
          for op in RECURRENT}
GENERIC = "LiteRT's GPU accelerator has no kernel for it: the model is split and this op runs on the CPU; " \
          "replace the layer or accept the split"


def inspect_gpu(model: bytes) -> ModelInfo:
    """The ops of a float TFLite model, and those the GPU accelerator refuses, with why."""
    from ai_edge_litert import schema_py_generated as schema

    from dlcli.mcu import _enum_names, _name

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    op_names = _enum_names(schema.BuiltinOperator)
    info = ModelInfo([], 0)
    for sg in m.subgraphs or []:
        tensors = sg.tensors or []
        for op in sg.operators or []:
            code = m.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            if name == "CUSTOM":
                name = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            if name not in info.ops:
                info.ops.append(name)
            outputs = [i for i in (op.outputs if op.outputs is not None else []) if i >= 0]
            reasons = _refusals(name)
            if reasons:
                info.offending.setdefault(name, set()).update(reasons)
                info.tensors.setdefault(name, set()).update(_name(tensors[i].name) for i in outputs)
    return info


def _refusals(name: str) -> set[str]:
    if name.startswith("Flex"):
        return {"Flex (TensorFlow) op"}
    return set() if name in GPU_OPS or name in GPU_CUSTOM else {"no GPU kernel"}
