"""The README sections of a generator's package (a GAN's generator, a VAE's decoder): its
inputs (latent vector, class id) and a runnable example (template files
``generate*.py.in``) that draws samples and maps them back to the data's raw values."""

from __future__ import annotations

from typing import Any

_RAW = {"standard": 'y * np.asarray(n["std"], np.float32) + np.asarray(n["mean"], np.float32)',
        "minmax": 'y * np.asarray(n["range"], np.float32) + np.asarray(n["min"], np.float32)',
        "rescale": '(y - np.float32(n["offset"])) / np.float32(n["scale"])', "none": "y"}


def io_lines(entry: dict[str, Any], gan: dict[str, Any]) -> list[str]:
    from dlcli.package import _tensor_line

    lines = [f"- input {_tensor_line(t)}" for t in entry["inputs"]]
    lines += [(f"- output {_tensor_line(entry['outputs'][0])}: one generated example, in the normalised space of "
               "`preprocessing.json` (the example below maps it back to raw values)."), "",
              f"The {gan['network']} takes a latent vector of {gan['latent_dim']} standard normal values"
              + (" and a class id (an int32, the line of `labels.txt`)" if gan["conditional"] else "") + "."]
    return [*lines, ""]


def python_example(fmt: str, entry: dict[str, Any], pre: dict[str, Any], gan: dict[str, Any]) -> str:
    """Draw one sample and map it back to raw values: ``templates/package/generate*.py.in``."""
    from dlcli.package_example import template

    method = pre["normalize"]["method"]
    draw = f'inputs = {{"latent": rng.standard_normal({gan["latent_dim"]}).astype(np.float32)'
    draw += ', "label": np.array([3], np.int32)}  # a sample of class 3' if gan["conditional"] else "}"
    body = ('    n = pre["normalize"]\n' if method != "none" else "") + f"    return {_RAW[method]}"
    runtime = template(f"generate_{fmt}.py.in").substitute(model=entry["name"]).rstrip("\n")
    return template("generate.py.in").substitute(runtime=runtime, method=repr(method), body=body, draw=draw)


def readme_sections(target: str, t, entry: dict[str, Any], pre: dict[str, Any], gan: dict[str, Any]) -> list[str]:
    """The generator's inputs and output, and (but for MCU targets) its Python example."""
    lines = io_lines(entry, gan)
    if target != "mcu":
        lines += [f"## Python ({t.runtime})", "", "Run in the unzipped folder:", "", "```python",
                  python_example(t.format, entry, pre, gan) + "```", ""]
    return lines
