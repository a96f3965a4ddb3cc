"""The README sections of a generator's package: its inputs (latent vector, class id) and
a runnable example that draws samples and maps them back to the data's raw values."""

from __future__ import annotations

from typing import Any

_RUNTIMES = {
    "tflite": ("from ai_edge_litert.interpreter import Interpreter", '''
interpreter = Interpreter(model_path="{model}")
interpreter.allocate_tensors()
ins = interpreter.get_input_details()
out = interpreter.get_output_details()[0]


def generate(inputs):
    """One sample: ``inputs`` maps latent (and label) to one example's values."""
    for name, x in inputs.items():
        d = next(d for d in ins if name in d["name"])
        x = np.asarray(x)[None]  # add the batch dimension (1)
        scale, zero_point = d["quantization"]
        if scale and d["dtype"] != np.int32:  # an int8 input: quantize
            x = np.clip(np.round(x / scale + zero_point), -128, 127)
        interpreter.set_tensor(d["index"], x.astype(d["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])[0].astype(np.float32)
    scale, zero_point = out["quantization"]
    return (y - zero_point) * scale if scale else y  # an int8 output: dequantize
'''),
    "onnx": ("import onnxruntime as ort", '''
session = ort.InferenceSession("{model}", providers=["CPUExecutionProvider"])


def generate(inputs):
    """One sample: ``inputs`` maps latent (and label) to one example's values."""
    feed = {{i.name: np.asarray(inputs[k])[None] for i in session.get_inputs() for k in inputs if k in i.name}}
    return session.run(None, feed)[0][0]
'''),
    "saved_model": ("import tensorflow as tf", '''
serve = tf.saved_model.load("{model}").signatures["serving_default"]


def generate(inputs):
    """One sample: ``inputs`` maps latent (and label) to one example's values."""
    y = serve(**{{k: tf.constant(np.asarray(v)[None]) for k, v in inputs.items()}})
    return next(iter(y.values())).numpy()[0]
'''),
}

_RAW = {"standard": 'y * np.asarray(n["std"], np.float32) + np.asarray(n["mean"], np.float32)',
        "minmax": 'y * np.asarray(n["range"], np.float32) + np.asarray(n["min"], np.float32)',
        "rescale": '(y - np.float32(n["offset"])) / np.float32(n["scale"])', "none": "y"}


def io_lines(entry: dict[str, Any], gan: dict[str, Any]) -> list[str]:
    from dlcli.package import _tensor_line

    lines = [f"- input {_tensor_line(t)}" for t in entry["inputs"]]
    lines += [(f"- output {_tensor_line(entry['outputs'][0])}: one generated example, in the normalised space of "
               "`preprocessing.json` (the example below maps it back to raw values)."), "",
              f"The generator takes a latent vector of {gan['latent_dim']} standard normal values"
              + (" and a class id (an int32, the line of `labels.txt`)" if gan["conditional"] else "") + "."]
    return [*lines, ""]


def python_example(fmt: str, entry: dict[str, Any], pre: dict[str, Any], gan: dict[str, Any]) -> str:
    imp, body = _RUNTIMES[fmt]
    method = pre["normalize"]["method"]
    draw = f'inputs = {{"latent": rng.standard_normal({gan["latent_dim"]}).astype(np.float32)'
    draw += ', "label": np.array([3], np.int32)}  # a sample of class 3\n' if gan["conditional"] else "}\n"
    return ("import json\nfrom pathlib import Path\n\nimport numpy as np\n" + imp + "\n\n"
            'pre = json.loads(Path("preprocessing.json").read_text())\n'
            + body.format(model=entry["name"]) + "\n\n"
            f'def to_raw(y):\n    """A generated example -> raw values: the inverse of the run\'s normalisation '
            f'({method!r})."""\n' + ('    n = pre["normalize"]\n' if method != "none" else "")
            + f"    return {_RAW[method]}\n\n\n"
            "rng = np.random.default_rng(0)\n" + draw
            + "sample = to_raw(generate(inputs))\nprint(sample.shape, float(sample.min()), float(sample.max()))\n")


def readme_sections(target: str, t, entry: dict[str, Any], pre: dict[str, Any], gan: dict[str, Any]) -> list[str]:
    """The generator's inputs and output, and (but for MCU targets) its Python example."""
    lines = io_lines(entry, gan)
    if target != "mcu":
        lines += [f"## Python ({t.runtime})", "", "Run in the unzipped folder:", "", "```python",
                  python_example(t.format, entry, pre, gan) + "```", ""]
    return lines
