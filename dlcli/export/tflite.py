"""TFLite (LiteRT): float32, dynamic range, float16 and full-integer int8; builtin ops
only (no Flex ops, which the LiteRT interpreter cannot run); checked by
``ai_edge_litert``.

Conversion follows Keras's own path (ExportArchive -> SavedModel ->
``TFLiteConverter.from_saved_model``) with dlcli's input signature: recurrent models
get a fixed batch of 1 so LSTM / GRU fuse into builtin ops (shared/STACK-FACTS.md, the team's verified-stack notes). For int8,
recurrent layers are unrolled first: the converter crashes on the fused kernels.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

import numpy as np

from dlcli.export.registry import register_exporter
from dlcli.export.runner import Runner, TensorInfo, dequantize, quantize


def convert(model, plan) -> bytes:
    conv, cleanup = converter(model, plan)
    try:
        return conv.convert()
    finally:
        cleanup()


def converter(model, plan):
    """``(TFLiteConverter, cleanup)`` set up for ``plan`` (call cleanup once converted)."""
    import keras
    import tensorflow as tf

    from dlcli.export.signature import has_recurrent_layers, input_signature, unrolled_copy

    if plan.quantize in ("int8", "int16x8") and has_recurrent_layers(model):
        model = unrolled_copy(model)
    tmp = tempfile.TemporaryDirectory()
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                         input_signature=input_signature(model, plan.tflite_batch))
    archive.write_out(tmp.name, verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(tmp.name)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    q = plan.quantize
    if q in ("dynamic", "float16", "int8", "int16x8"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if q == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if q in ("int8", "int16x8"):
        conv.representative_dataset = representative_dataset(plan)
        wide = q == "int16x8"  # 16-bit activations, 8-bit weights (LiteRT's reference kernels)
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 if wide
               else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if plan.int8_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
        io_type = tf.int16 if wide else tf.int8
        if any(t.dtype in ("float32", "float16") for t in model.inputs):
            conv.inference_input_type = io_type  # float inputs only; id inputs stay int32
        conv.inference_output_type = io_type
        if not plan.int8_per_channel:
            conv._experimental_disable_per_channel = True  # per-tensor scales: smaller, coarser
    return conv, tmp.cleanup


def representative_dataset(plan, limit: int | None = None):
    """The calibration rows as the converter takes them: a generator function of batches."""
    rep = plan.representative
    batch = plan.tflite_batch or 1

    def dataset():
        from dlcli.data.inputs import num_rows, take_rows

        n = num_rows(rep) if limit is None else min(limit, num_rows(rep))
        for i in range(0, n - batch + 1, batch):
            rows = take_rows(rep, slice(i, i + batch))
            yield rows if isinstance(rows, dict) else [rows]  # several inputs: by name

    return dataset


def export(model, target: Path, plan) -> None:
    Path(target).write_bytes(convert(model, plan))


def _info(d) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    dtype = np.dtype(d["dtype"]).name
    q = scale != 0.0 and dtype in ("int8", "uint8", "int16")
    shape = [int(s) for s in d["shape_signature"]] if "shape_signature" in d else [int(s) for s in d["shape"]]
    return TensorInfo(d["name"], dtype, [None if s == -1 else s for s in shape],
                      float(scale) if q else None, int(zp) if q else None)


class TFLiteRunner(Runner):
    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = str(path)
        self.interpreter = Interpreter(model_path=self.path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inputs = [_info(d) for d in self.interpreter.get_input_details()]
        self.outputs = [_info(d) for d in self.interpreter.get_output_details()]
        self.fixed_batch = self.inputs[0].shape[0]
        self._batch = None

    def ops(self) -> list[str]:
        """The model's operators as converted (read without delegates, which replace nodes)."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        plain = Interpreter(model_path=self.path,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        return sorted({op["op_name"] for op in plain._get_ops_details()})

    def _run(self, xs: list[np.ndarray]) -> np.ndarray:
        n = len(xs[0])
        if self.fixed_batch is None and self._batch != n:
            for d, xb in zip(self.interpreter.get_input_details(), xs, strict=True):
                self.interpreter.resize_tensor_input(d["index"], [n, *xb.shape[1:]])
            self.interpreter.allocate_tensors()
            self._batch = n
        for d, info, xb in zip(self.interpreter.get_input_details(), self.inputs, xs, strict=True):
            self.interpreter.set_tensor(d["index"], quantize(xb, info))
        self.interpreter.invoke()
        out = self.interpreter.get_output_details()[0]
        return dequantize(self.interpreter.get_tensor(out["index"]).copy(), self.outputs[0])

    def predict(self, x) -> np.ndarray:
        from dlcli.export.signature import match_inputs

        xs = match_inputs(x, [t.name for t in self.inputs])
        b = self.fixed_batch or min(len(xs[0]), 256)
        parts = []
        for i in range(0, len(xs[0]), b):
            chunk = [a[i:i + b] for a in xs]
            n = len(chunk[0])
            if self.fixed_batch and n < b:  # pad the last chunk of a fixed-batch model
                chunk = [np.concatenate([a, np.repeat(a[-1:], b - n, axis=0)]) for a in chunk]
            parts.append(self._run(chunk)[:n])
        return np.concatenate(parts)


def load(path: Path, threads: int | None = None) -> Runner:
    return TFLiteRunner(Path(path), threads)


register_exporter("tflite", ".tflite", "ai_edge_litert")(sys.modules[__name__])
