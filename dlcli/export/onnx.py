"""ONNX through Keras's own exporter (tf2onnx.convert.from_keras fails on Keras 3
models: onnx/tensorflow-onnx#2448); checked by onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dlcli.export.registry import register_exporter
from dlcli.export.runner import Runner, TensorInfo

_ORT_TYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(double)": "float64", "tensor(float16)": "float16"}


def export(model, target: Path, plan) -> None:
    from dlcli.export.signature import input_signature

    kwargs = {"opset_version": plan.opset} if plan.opset else {}
    model.export(str(target), format="onnx", verbose=False, input_signature=input_signature(model, None), **kwargs)


class OnnxRunner(Runner):
    def __init__(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [TensorInfo(i.name, _ORT_TYPES.get(i.type, i.type), [d if isinstance(d, int) else None for d in i.shape])
                       for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, _ORT_TYPES.get(o.type, o.type), [d if isinstance(d, int) else None for d in o.shape])
                        for o in self.session.get_outputs()]

    def predict(self, x: np.ndarray) -> np.ndarray:
        feed = {self.inputs[0].name: x.astype(self.inputs[0].dtype)}
        return np.asarray(self.session.run([self.outputs[0].name], feed)[0])


def load(path: Path) -> Runner:
    return OnnxRunner(Path(path))


register_exporter("onnx", ".onnx", "onnxruntime")(sys.modules[__name__])
