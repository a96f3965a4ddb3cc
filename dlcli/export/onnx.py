"""ONNX through Keras's own exporter (tf2onnx.convert.from_keras fails on Keras 3
models: onnx/tensorflow-onnx#2448); checked by onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dlcli.export.registry import register_exporter
from dlcli.export.runner import Runner, TensorInfo

_ORT_TYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(double)": "float64", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


_FIXES_REGISTERED = False


def register_tf2onnx_fixes() -> None:
    """Teach tf2onnx the TensorFlow ops Keras 3 layers emit that it lacks.

    ``Erfc``: exact GELU (``keras.activations.gelu``, the transformer default) lowers to
    ``erfc``; tf2onnx 1.17 has no handler, and the graph it writes is rejected by
    onnxruntime. erfc(x) = 1 - erf(x), and ONNX has ``Erf`` from opset 9.
    """
    global _FIXES_REGISTERED
    if _FIXES_REGISTERED:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:  # registered by the decorator
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            np_dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, np_dtype))
            erf = ctx.make_node("Erf", [node.input[0]], name=utils.make_name(f"{node.name}_erf"))
            node.type = "Sub"
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])

    _FIXES_REGISTERED = True


def export(model, target: Path, plan) -> None:
    """Float ONNX; with ``plan.quantize == "int8"``, that graph statically quantized by
    onnxruntime (QDQ, int8 weights per channel and activations, calibrated on the plan's
    representative rows with ``plan.onnx_calibration``)."""
    from dlcli.export.signature import input_signature

    register_tf2onnx_fixes()
    kwargs = {"opset_version": plan.opset} if plan.opset else {}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dlcli-onnx-") as tmp:
        floating = Path(tmp) / "float.onnx" if plan.quantize in ("int8", "dynamic") else Path(target)
        model.export(str(floating), format="onnx", verbose=False, input_signature=input_signature(model, None),
                     **kwargs)
        if plan.quantize == "int8":
            quantize_static_int8(floating, target, plan.representative, plan.onnx_calibration)
        elif plan.quantize == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(floating), str(target), weight_type=QuantType.QInt8,
                             per_channel=plan.int8_per_channel)


def quantize_static_int8(source: Path, target: Path, rows, method: str = "minmax",
                         exclude: list[str] | None = None) -> None:
    """onnxruntime.quantization.quantize_static: QDQ format, per-channel int8 weights, int8
    activations; ``rows`` (an array, or a dict of arrays by input name) calibrate;
    ``exclude``: node names left in float (``--fallback auto``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    quantize_static(str(source), str(target), rows_reader(source, rows), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method], nodes_to_exclude=list(exclude or []))


def rows_reader(model_path: Path, rows):
    """An onnxruntime ``CalibrationDataReader`` over ``rows``, one row per call, by input name."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader

    from dlcli.data.inputs import num_rows, take_rows
    from dlcli.export.signature import match_inputs

    names = [i.name for i in ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).get_inputs()]

    class Rows(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= num_rows(rows):
                return None
            one = take_rows(rows, slice(self.i, self.i + 1))
            self.i += 1
            return {n: np.asarray(a) for n, a in zip(names, match_inputs(one, names), strict=True)}

    return Rows()


class OnnxRunner(Runner):
    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [TensorInfo(i.name, _ORT_TYPES.get(i.type, i.type), [d if isinstance(d, int) else None for d in i.shape])
                       for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, _ORT_TYPES.get(o.type, o.type), [d if isinstance(d, int) else None for d in o.shape])
                        for o in self.session.get_outputs()]

    def predict(self, x) -> np.ndarray:
        from dlcli.export.signature import match_inputs

        arrays = match_inputs(x, [t.name for t in self.inputs])
        feed = {t.name: a.astype(t.dtype) for t, a in zip(self.inputs, arrays, strict=True)}
        return np.asarray(self.session.run([self.outputs[0].name], feed)[0])


def load(path: Path, threads: int | None = None) -> Runner:
    return OnnxRunner(Path(path), threads)


register_exporter("onnx", ".onnx", "onnxruntime")(sys.modules[__name__])


def float_nodes(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """``(op types, {op type: node names})`` of a QDQ int8 ONNX model: the nodes that run in
    float, i.e. take a float tensor that no DequantizeLinear produced (onnxruntime's quantizer
    has no int8 kernel for them, so they sit between DequantizeLinear and QuantizeLinear)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    float_names = {v.name for v in [*g.input, *g.value_info, *g.output] if v.type.tensor_type.elem_type in floats}
    constants = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    produced = {o: n.op_type for n in g.node for o in n.output}
    found: dict[str, list[str]] = {}
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        inputs = [i for i in n.input if i and i in float_names and i not in constants]
        if any(produced.get(i) != "DequantizeLinear" for i in inputs):
            found.setdefault(n.op_type, []).append(n.name)
    return sorted({n.op_type for n in g.node}), found
