"""Deployment packages: one verified artifact of a run, zipped with what it needs to run.

``build_package(run_dir, target, out) -> PackageResult`` takes the artifact for
``target`` from ``RUN_DIR/export`` (exporting it with :func:`dlcli.export.export_run`
when the export manifest does not list it), refuses one whose parity gate failed, and
writes a zip archive (atomically) holding the model, ``labels.txt`` (classifiers),
``preprocessing.json``, a README with an inference example for the target runtime and
``manifest.json`` (sha256 of every other file, the recipe hash, library versions and the
artifact's export checks). ``--target mcu`` adds the C files of :mod:`dlcli.mcu`.

``verify_package(path) -> VerifyResult`` (:mod:`dlcli.package_verify`) checks an archive.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import platform
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.errors import ParityError, RunDirError, UsageError
from dlcli.package_verify import MANIFEST, PACKAGE_FORMAT, VerifyResult, unsafe_name, verify_package  # noqa: F401
from dlcli.rundir import BESIDE

_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same inputs give the same archive bytes


@dataclass(frozen=True)
class Target:
    name: str
    format: str  # the export format
    quantization: str
    runtime: str


TARGETS = {t.name: t for t in (
    Target("tflite", "tflite", "none", "ai_edge_litert"),
    Target("tflite-int8", "tflite", "int8", "ai_edge_litert"),
    Target("onnx", "onnx", "none", "onnxruntime"),
    Target("onnx-int8", "onnx", "int8", "onnxruntime"),  # static QDQ int8 (export --onnx-quantize int8)
    Target("saved_model", "saved_model", "none", "tensorflow"),
    Target("mcu", "tflite", "int8", "tflite_micro"),
)}


def get_target(name: str) -> Target:
    from dlcli.recipe.base import closest

    if name not in TARGETS:
        hint = closest(name, list(TARGETS))
        raise UsageError(f"--target {name!r}: unknown target" + (f", did you mean {hint!r}?" if hint else "")
                         + f" (known: {', '.join(TARGETS)})")
    return TARGETS[name]


@dataclass
class PackageResult:
    path: Path
    target: str
    model: str
    files: dict[str, dict[str, Any]]
    sha256: str
    size_bytes: int
    exported: bool
    arena: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = {"archive": str(self.path), "target": self.target, "model": self.model, "sha256": self.sha256,
             "size_bytes": self.size_bytes, "exported": self.exported, "files": self.files}
        if self.arena:
            d["tensor_arena"] = self.arena
        return d


# ------------------------------------------------------------------ the artifact
def _failure(entry: dict[str, Any]) -> str:
    if entry.get("error"):
        return entry["error"]
    checks = entry.get("checks") or {}
    return "; ".join(checks.get("failures") or ["marked failed"]) + f" (output {checks.get('output')!r})"


def _find(manifest: dict[str, Any] | None, target: Target) -> dict[str, Any] | None:
    for a in (manifest or {}).get("artifacts", []):
        if a.get("format") == target.format and a.get("quantization") == target.quantization:
            return a
    return None


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: cannot read the export manifest: {exc}") from exc


def artifact_path(export_dir: Path, entry: dict[str, Any]) -> Path:
    """The file or folder an export manifest entry names: a plain name inside the export
    folder (a tampered manifest's ``..``, absolute path or link out of it is refused)."""
    for key in ("path", "name"):
        value = entry.get(key)
        if not isinstance(value, str) or unsafe_name(value) or "/" in value or value in (".", ""):
            raise RunDirError(f"{export_dir / MANIFEST}: artifact {key} {value!r} is not a name inside "
                              f"{export_dir}; export again with `dlcli export`")
    path = export_dir / entry["path"]
    if export_dir.resolve() not in path.resolve().parents:
        raise RunDirError(f"{path}: leads outside {export_dir} (a link?); export again with `dlcli export`")
    return path


def _artifact_files(model_path: Path, name: str) -> dict[str, Path]:
    """Archive name -> file of an artifact (a folder's files, none of them a link)."""
    if not model_path.is_dir():
        return {name: model_path}
    files = {}
    for f in sorted(model_path.rglob("*")):
        if f.is_symlink():
            raise RunDirError(f"{f}: a link inside the exported {name}; export again with `dlcli export`")
        if f.is_file():
            files[f"{name}/{f.relative_to(model_path).as_posix()}"] = f
    return files


def resolve_artifact(run, target: Target, log, part: str | None = None) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The export manifest entry for ``target`` (exporting it first if it is not listed),
    the whole manifest, and whether it was exported now; ``part="decoder"``: a VAE's decoder
    (RUN_DIR/export/decoder)."""
    from dlcli.export import export_run, sha256_path

    export_dir = run.path / "export" / (part or "")
    manifest = _read_manifest(export_dir / MANIFEST)
    entry, exported = _find(manifest, target), False
    if entry is None or not artifact_path(export_dir, entry).exists():
        q = "" if target.quantization == "none" else f" {target.quantization}"
        log(f"no {target.format}{q} artifact in {export_dir}/{MANIFEST}: exporting it ...")
        if target.format == "onnx":  # ONNX int8 is onnxruntime's quantization of the ONNX export
            export_run(run.path, ["onnx"], "none", log=log, part=part, onnx_quantize=target.quantization)
        else:
            export_run(run.path, [target.format], target.quantization, log=log, part=part)
        new = _read_manifest(export_dir / MANIFEST) or {"artifacts": []}  # export_run merged it
        manifest, entry, exported = new, _find(new, target), True
        if entry is None:
            raise ParityError(f"exporting {target.format}{q} wrote no artifact; see {export_dir / MANIFEST}")
    path = artifact_path(export_dir, entry)
    if entry.get("status") != "passed":
        raise ParityError(f"{path} failed its parity gate and is not packaged: {_failure(entry)}; "
                          f"see {export_dir / MANIFEST}")
    sha, _ = sha256_path(path)
    if sha != entry.get("sha256"):
        raise RunDirError(f"{path} changed after export (its sha256 differs from {export_dir / MANIFEST}); "
                          "export it again with `dlcli export`")
    return entry, manifest, exported


# ------------------------------------------------------------------ contents
def _versions(run) -> dict[str, Any]:
    from importlib import metadata

    import dlcli

    now = {"python": platform.python_version(), "dlcli": dlcli.__version__}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "ai-edge-litert", "onnxruntime", "tflite-micro"):
        try:
            now[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    trained = {k: run.env[k] for k in ("python", "dlcli", "tensorflow", "keras", "numpy") if k in run.env}
    return {"training": trained, "packaging": now}


def preprocessing_doc(run, entry: dict[str, Any]) -> dict[str, Any]:
    pre = json.loads((run.path / "preprocessing.json").read_text())
    doc = {"format": "dlcli-package-preprocessing/1", **{k: v for k, v in pre.items() if k != "format"},
           "model_inputs": entry.get("inputs", []), "model_outputs": entry.get("outputs", [])}
    quant = {side: {k: t[k] for k in ("dtype", "scale", "zero_point")}
             for side, t in (("input", (entry.get("inputs") or [{}])[0]), ("output", (entry.get("outputs") or [{}])[0]))
             if t.get("scale") is not None}
    if quant:
        doc["quantization"] = {**quant, "formula": "real = (quantized - zero_point) * scale; "
                               "quantized = clip(round(real / scale) + zero_point, -128, 127)"}
    return doc


def _sources(run, target: Target, entry: dict[str, Any], log,
             part: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Archive name -> bytes or a file Path, and the mcu arena estimate."""
    export_dir = run.path / "export" / (part or "")
    model_path = artifact_path(export_dir, entry)
    files: dict[str, Any] = dict(_artifact_files(model_path, entry["name"]))
    pre = preprocessing_doc(run, entry)
    files["preprocessing.json"] = (json.dumps(pre, indent=2) + "\n").encode()
    for extra in BESIDE[1:] if part is None else ():  # labels.txt; anomaly.json: the reconstruction-error
        if (run.path / extra).exists():  # threshold (neither is about a decoder's samples)
            files[extra] = (run.path / extra).read_bytes()
    arena = None
    if target.name == "mcu":
        import dlcli
        from dlcli import mcu

        model = model_path.read_bytes()
        info = mcu.check_full_integer(model, entry["name"], fell_back=(entry.get("fallback") or {}).get("layers"))
        log("measuring the tensor arena in TFLite Micro ...")
        arena = mcu.measure_arena(model, info, entry["name"])
        files.update(mcu.c_files(model, entry["name"], hashlib.sha256(model).hexdigest(), info, arena, entry["inputs"],
                                 entry["outputs"], dlcli.__version__))
    files["README.md"] = readme(target.name, entry, pre, "labels.txt" in files, arena, run.path.name,
                                run.env.get("recipe_hash"), _generator(run, entry, part)).encode()
    return files, arena


def _generator(run, entry: dict[str, Any], part: str | None) -> dict[str, Any] | None:
    """What the README says of a model that makes examples from latent vectors (a GAN's
    generator, a VAE's decoder); None for any other model."""
    if part == "decoder":
        return {"network": "decoder", "latent_dim": entry["inputs"][0]["shape"][-1], "conditional": False}
    if run.recipe.task == "gan":
        gan = run.recipe.model.gan
        return {"network": "generator", "latent_dim": gan.latent_dim, "conditional": gan.conditional}
    return None


def _digest(src) -> tuple[str, int]:
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest(), len(src)
    from dlcli.atomic import sha256_stream

    with open(src, "rb") as fh:
        return sha256_stream(fh)


def _entry(name: str) -> zipfile.ZipInfo:
    why = unsafe_name(name)
    if why:  # every name comes from dlcli or a checked manifest: a bug if it happens
        raise RuntimeError(f"archive entry {name!r} has {why}")
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix: the mode below is meaningful
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def build_package(run_dir: str | Path, target: str, out: str | Path, log=None, part: str | None = None) -> PackageResult:
    """Package ``run_dir``'s artifact for ``target`` into the zip archive ``out``;
    ``part="decoder"``: a VAE run's decoder (latent vectors in, new examples out)."""
    from dlcli.atomic import atomic_path
    from dlcli.rundir import open_run

    log = log or (lambda msg: None)
    t = get_target(target)
    out = Path(out)
    if out.suffix != ".zip":
        raise UsageError(f"--out {out}: a dlcli package is a .zip archive; name it {out.stem or 'package'}.zip")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; name the archive file (for example {out / 'model.zip'})")
    run = open_run(run_dir)
    if isinstance(run.preprocessor.input_shape, dict) and t.name == "mcu":
        raise UsageError(f"--target mcu: the model has several inputs ({', '.join(run.preprocessor.input_shape)}); "
                         "dlcli's TFLite Micro package (C array, one input buffer) takes one: package it for "
                         "tflite-int8, tflite, onnx or saved_model")
    entry, export_manifest, exported = resolve_artifact(run, t, log, part)
    files, arena = _sources(run, t, entry, log, part)
    listing = {}
    for name in sorted(files):
        sha, size = _digest(files[name])
        listing[name] = {"sha256": sha, "size": size}
    manifest = {
        "format": PACKAGE_FORMAT,
        "target": t.name,
        "runtime": t.runtime,
        "model": entry["name"],
        **({"part": part} if part else {}),
        "run": {"name": run.recipe.name, "dir": run.path.name, "task": run.recipe.task,
                "recipe_hash": run.env.get("recipe_hash"), "seed": run.env.get("seed"),
                "data_fingerprint": run.env.get("data_fingerprint")},
        "versions": _versions(run),
        "artifact": {k: v for k, v in entry.items() if k != "path"},
        "keras_reference": export_manifest.get("keras"),
        **({"tensor_arena": arena} if arena else {}),
        "files": listing,
    }
    with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(_entry(MANIFEST), json.dumps(manifest, indent=2) + "\n")
        for name in sorted(files):
            src = files[name]
            with zf.open(_entry(name), "w") as dst:
                if isinstance(src, bytes):
                    dst.write(src)
                else:
                    with open(src, "rb") as fh:
                        for chunk in iter(lambda: fh.read(1 << 20), b""):
                            dst.write(chunk)
    sha, size = _digest(out)
    return PackageResult(out, t.name, entry["name"], listing, sha, size, exported, arena)


# ------------------------------------------------------------------ README
HOST_CHECK = "TFLite Micro's Python interpreter, to check the model on a host"


def _tensor_line(t: dict[str, Any]) -> str:
    q = f", scale {t['scale']:.9g}, zero point {t['zero_point']}" if t.get("scale") is not None else ""
    return f"`{t['name']}`: {t['dtype']} {t['shape']}{q}"


def _io_lines(entry: dict[str, Any], pre: dict[str, Any], has_labels: bool) -> list[str]:
    if "inputs" in pre:
        ins = [f"- input {_tensor_line(t)}" for t in entry["inputs"]]
    else:
        ins = [(f"- input {_tensor_line(entry['inputs'][0])}; one example is `{pre['input_shape']}` "
                f"({pre['input_dtype']}), after the featurizer and the normalisation in `preprocessing.json` "
                f"(`normalize.method` = `{pre['normalize']['method']}`).")]
    out = (f"- output {_tensor_line(entry['outputs'][0])}"
           + ("; class scores in the order of `labels.txt`." if has_labels else "."))
    return [*ins, out, ""]


def readme(target: str, entry: dict[str, Any], pre: dict[str, Any], has_labels: bool,
           arena: dict[str, Any] | None, run_name: str, recipe_hash: str | None, generator: dict | None = None) -> str:
    """The package's README.md; ``generator`` (network, latent_dim, conditional): the model
    makes examples from latent vectors (``_generator``)."""
    t = TARGETS[target]
    c = entry.get("checks") or {}
    agree = f", top-1 agreement {c['top1_agreement']:.3f}" if c.get("top1_agreement") is not None else ""
    files = [("manifest.json", "sha256 of every other file, run provenance, library versions, export checks"),
             (entry["name"] + ("/" if t.format == "saved_model" else ""), f"the model ({t.format}, {t.quantization})"),
             ("preprocessing.json", "input shape and dtype, the fitted normalisation, labels"
              + (", int8 scale and zero point" if entry["inputs"][0].get("scale") is not None else "")),
             *([("labels.txt", "class names, one per line, in output order")] if has_labels else []),
             *([("model_data.h / model_data.cc", "the model as an aligned C array, arena size, I/O quantization"),
                ("ops.h", "the operators to register with tflite::MicroMutableOpResolver")] if target == "mcu" else []),
             ("README.md", "this file")]
    lines = [f"# {run_name}: `{target}` package", "",
             (f"Made by dlcli from run `{run_name}` (recipe hash `{(recipe_hash or 'unknown')[:16]}`). "
             f"The model passed the export parity gate in {entry.get('runtime')}: "
             f"max abs error {c.get('max_abs_error', float('nan')):.2e} against Keras{agree}, "
             f"{c.get('metric', 'metric')} {c.get('artifact_metric', float('nan')):.4f} "
             f"(Keras {c.get('keras_metric', float('nan')):.4f})."), "",
             "| file | contents |", "|---|---|", *(f"| `{f}` | {d} |" for f, d in files), "",
             "## Input and output", "", *(_io_lines(entry, pre, has_labels) if generator is None else [])]
    if generator is not None:
        from dlcli.gan.package import readme_sections

        lines += readme_sections(target, t, entry, pre, generator)
    elif "inputs" in pre:  # several named inputs: each prepared as its entry in preprocessing.json says
        lines += [("Each input is prepared as its entry under `inputs` in `preprocessing.json` says (its columns, "
                   "type, fitted normalisation or vocabulary), then fed to the input of the same name."), ""]
    else:
        from dlcli.package_example import python_example

        lines += [f"## Python ({HOST_CHECK if target == 'mcu' else t.runtime})",
                  "", "Run in the unzipped folder:", "", "```python",
                  python_example(target, t.format, entry, pre, has_labels, arena) + "```", ""]
    if target == "mcu":
        from dlcli.mcu import readme_section

        lines += readme_section(entry, arena)
    lines += ["## Checking the package", "", "```bash", "dlcli package verify PACKAGE.zip", "```", "",
              ("recomputes the sha256 of every file against `manifest.json` without extracting anything. "
              "Without dlcli: `unzip PACKAGE.zip -d pkg && cd pkg && sha256sum FILE` and compare with "
              "`manifest.json`."), ""]
    return "\n".join(lines)
