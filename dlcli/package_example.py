"""The Python inference example in a package's README, filled in from the template files in
``dlcli/templates/package`` (``predict.py.in`` around a runtime's ``predict_*.py.in`` and a
``normalize_*.py.in``). The package test runs the example of every target as written."""

from __future__ import annotations

from typing import Any

# int8 input / output: quantize with the model's own scale and zero point (LiteRT reports
# them; TFLite Micro's Python interpreter does not, so the mcu example reads preprocessing.json)
QUANTIZE_IN = {"tflite": '''    scale, zero_point = inp["quantization"]  # int8 input: quantize
    x = np.clip(np.round(np.asarray(x, np.float32) / scale + zero_point), -128, 127).astype(np.int8)
''', "mcu": '''    q = pre["quantization"]["input"]  # int8 input: quantize
    x = np.clip(np.round(np.asarray(x, np.float32) / q["scale"] + q["zero_point"]), -128, 127).astype(np.int8)
'''}
DEQUANTIZE_OUT = {"tflite": '''    scale, zero_point = out["quantization"]  # int8 output: dequantize
    return (y.astype(np.float32) - zero_point) * scale
''', "mcu": '''    q = pre["quantization"]["output"]  # int8 output: dequantize
    return (y.astype(np.float32) - q["zero_point"]) * q["scale"]
'''}
NORMALIZE = {"standard": '(x - np.asarray(n["mean"], np.float32)) / np.asarray(n["std"], np.float32)',
             "minmax": '(x - np.asarray(n["min"], np.float32)) / np.asarray(n["range"], np.float32)',
             "rescale": 'x * np.float32(n["scale"]) + np.float32(n["offset"])', "none": "x"}


def template(name: str):
    """A file of ``dlcli/templates/package`` as a ``string.Template`` (``$name`` placeholders)."""
    from importlib.resources import files
    from string import Template

    return Template(files("dlcli").joinpath("templates", "package", name).read_text(encoding="utf-8"))


def python_example(target: str, fmt: str, entry: dict[str, Any], pre: dict[str, Any], has_labels: bool,
                   arena: dict[str, Any] | None = None) -> str:
    """A runnable Python example for the package's runtime (``fmt``: tflite, onnx or
    saved_model; ``target`` mcu runs TFLite Micro's Python interpreter), run in the unzipped folder."""
    ids = pre["input_dtype"] == "int32"
    included = entry.get("preprocessing") == "included"  # the model reshapes and normalizes itself
    raw_shape = list(entry["inputs"][0]["shape"][1:])
    show = "print(labels[int(np.argmax(scores))], scores)" if has_labels else "print(scores)"
    return template("predict.py.in").substitute(
        runtime=_runtime(target, fmt, entry, arena).rstrip("\n"),
        labels='labels = Path("labels.txt").read_text().splitlines()' if has_labels else "",
        normalize=_normalize(pre, ids, included, raw_shape).rstrip("\n"),
        example_shape=raw_shape if included else 'pre["input_shape"]', example_dtype="int32" if ids else "float32",
        show=show)


def _runtime(target: str, fmt: str, entry: dict[str, Any], arena: dict[str, Any] | None) -> str:
    """The runtime's import, its model loading and ``predict(x)``."""
    q_in = entry["inputs"][0].get("scale") is not None
    q_out = entry["outputs"][0].get("scale") is not None
    kind = "mcu" if target == "mcu" else fmt
    dtype = "float32" if q_in else entry["inputs"][0]["dtype"]
    plain_in = f"    x = np.asarray(x, np.{'int32' if kind == 'mcu' else dtype})\n"
    quantized = "mcu" if kind == "mcu" else "tflite"
    return template(f"predict_{kind}.py.in").substitute(
        model=entry["name"], dtype=dtype, arena=(arena or {}).get("recommended_bytes"),
        quantize_in=QUANTIZE_IN[quantized] if q_in else plain_in,
        dequantize_out=DEQUANTIZE_OUT[quantized] if q_out else "    return y\n")


def _normalize(pre: dict[str, Any], ids: bool, included: bool, raw_shape: list[int]) -> str:
    """``normalize(raw)``: what the model needs done to one raw example."""
    if included:
        return template("normalize_included.py.in").substitute(dtype="int32" if ids else "float32", shape=raw_shape)
    if ids:
        return template("normalize_ids.py.in").substitute()
    method = pre["normalize"]["method"]
    body = ('    n = pre["normalize"]\n' if method != "none" else "") + f"    return {NORMALIZE[method]}"
    return template("normalize_fitted.py.in").substitute(method=repr(method), body=body)
