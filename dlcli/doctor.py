"""``doctor() -> Diagnosis``: the installed stack, the devices TensorFlow sees, and known-bad combinations.

Versions come from package metadata (``importlib.metadata``: cheap, and it works even
when a package is too broken to import); TensorFlow is imported only to list devices.
``diagnose(dists, environ)`` is a pure function of the installed distributions and the
environment, so every rule can be tested without installing anything.

Levels: ``error`` (dlcli will fail or silently build the wrong thing: ``dlcli doctor``
exits 2), ``warning`` (off the verified stack, or a feature will be missing), ``info``.
The verified stack is the one in the project's STACK-FACTS notes: TensorFlow 2.21,
Keras 3.15.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dlcli.errors import EnvironmentProblemError

VERIFIED = {"tensorflow": (2, 21), "keras": (3, 15)}

# label -> distributions that provide it (the first installed one is reported)
PACKAGES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly", "tf-nightly-cpu",
                   "tensorflow-macos", "tensorflow-intel"),
    "keras": ("keras", "keras-nightly"),
    "numpy": ("numpy",),
    "protobuf": ("protobuf",),
    "onnx": ("onnx",),
    "tf2onnx": ("tf2onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"),
    "ai-edge-litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite-micro": ("tflite-micro",),
    "pydantic": ("pydantic",),
    "typer": ("typer",),
    "matplotlib": ("matplotlib",),
}
# installed alongside the stack, they change how it behaves
EXTRA = ("tf-keras", "tensorflow-model-optimization", "jax", "torch", "openvino")
KERAS_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "openvino": "openvino", "numpy": "numpy"}
# distributions that install the same import package: two of them overwrite each other's files
CONFLICTS: list[tuple[str, tuple[str, ...], str, str]] = [
    ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly", "tf-nightly-cpu"), "error",
     "'tensorflow-cpu>=2.21,<2.22' (or 'tensorflow[and-cuda]>=2.21,<2.22' for a GPU)"),
    ("keras", ("keras", "keras-nightly"), "error", "'keras>=3.15,<3.16'"),
    ("onnxruntime", PACKAGES["onnxruntime"], "warning", "onnxruntime (or one accelerated variant alone)"),
]
# optional runtimes: label -> (level when missing, what is lost, install command)
OPTIONAL = {
    "onnx": ("warning", "`dlcli export --onnx` cannot write or check ONNX models", "pip install 'onnx>=1.16'"),
    "tf2onnx": ("warning", "`dlcli export --onnx` cannot convert (Keras's ONNX export drives tf2onnx)",
                "pip install 'tf2onnx>=1.17'"),
    "onnxruntime": ("warning", "ONNX artifacts cannot be checked, evaluated or run", "pip install onnxruntime"),
    "ai-edge-litert": ("warning", ("TFLite artifacts cannot be checked, evaluated or run (LiteRT runs them; do not "
                                   "fall back to tf.lite.Interpreter, which is deprecated)"), "pip install ai-edge-litert"),
    "tflite-micro": ("info", "int8 models cannot be run in the TFLite Micro interpreter",
                     "pip install --pre tflite-micro"),
    "matplotlib": ("warning", "`dlcli report` cannot draw its plots", "pip install 'matplotlib>=3.8'"),
}
REQUIRED = ("tensorflow", "keras", "numpy", "protobuf", "pydantic", "typer")


@dataclass
class Problem:
    level: str  # error | warning | info
    code: str  # short stable id, e.g. legacy-keras
    message: str
    fix: str = ""


@dataclass
class Diagnosis:
    python: str
    versions: dict[str, str | None]  # label -> version (None: not installed)
    distributions: dict[str, str]  # every relevant installed distribution -> version
    devices: list[dict[str, str]]
    environment: dict[str, str]
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "python": self.python, "versions": self.versions,
                "distributions": self.distributions, "devices": self.devices, "environment": self.environment,
                "problems": [asdict(p) for p in self.problems],
                "counts": {lvl: sum(p.level == lvl for p in self.problems) for lvl in ("error", "warning", "info")}}

    def raise_for_errors(self) -> None:
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise EnvironmentProblemError(f"{first.message}{more}; fix: {first.fix}")


ENV_VARS = ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND", "CUDA_VISIBLE_DEVICES")


def doctor(list_devices: bool = True) -> Diagnosis:
    """Inspect this Python environment. Imports TensorFlow (only) when ``list_devices``."""
    dists = installed_distributions()
    environ = {k: os.environ[k] for k in ENV_VARS if k in os.environ}
    problems = diagnose(dists, os.environ)
    devices: list[dict[str, str]] = []
    if list_devices and installed_as(dists, PACKAGES["tensorflow"]):
        devices, error = tensorflow_devices()
        if error:
            problems.insert(0, Problem("error", "tensorflow-import", f"`import tensorflow` fails: {error}",
                                       "reinstall the verified stack: pip install --force-reinstall "
                                       "'tensorflow-cpu>=2.21,<2.22' 'keras>=3.15,<3.16'"))
        elif not any(d["type"] == "GPU" for d in devices):
            problems.append(Problem("info", "no-gpu", "TensorFlow sees no GPU: training runs on the CPU", ""))
    versions = {label: (installed_as(dists, names) or (None, None))[1] for label, names in PACKAGES.items()}
    return Diagnosis(platform.python_version(), versions, dists, devices, environ, problems)


def installed_distributions() -> dict[str, str]:
    """Installed versions of every distribution doctor knows about (normalized names)."""
    from importlib import metadata

    out = {}
    for name in dict.fromkeys([n for names in PACKAGES.values() for n in names] + list(EXTRA)):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def tensorflow_devices() -> tuple[list[dict[str, str]], str | None]:
    """Physical devices TensorFlow sees, or the first line of why it cannot be imported."""
    try:
        import tensorflow as tf

        return [{"name": d.name, "type": d.device_type} for d in tf.config.list_physical_devices()], None
    except Exception as exc:  # noqa: BLE001 - a broken install is what doctor is for
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return [], f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def diagnose(dists: Mapping[str, str], environ: Mapping[str, str]) -> list[Problem]:
    """Every known-bad combination in ``dists`` (distribution -> version) and ``environ``."""
    found = {label: installed_as(dists, names) for label, names in PACKAGES.items()}
    return [*_installed(found, dists), *_versions(found), *_legacy_keras(dists, environ),
            *_backend(dists, environ), *_extras(found, dists)]


def _installed(found, dists) -> list[Problem]:
    """Required packages that are missing, and packages that overwrite one another."""
    out: list[Problem] = []
    for label in REQUIRED:
        if not found[label]:
            pin = {"tensorflow": "'tensorflow-cpu>=2.21,<2.22' (or tensorflow)", "keras": "'keras>=3.15,<3.16'"}
            out.append(Problem("error", f"missing-{label}", f"{label} is not installed (dlcli needs it)",
                               f"pip install {pin.get(label, label)}"))
    for label, names, level, keep in CONFLICTS:
        both = [n for n in names if n in dists]
        if len(both) > 1:
            out.append(Problem(level, f"conflict-{label}", f"{' and '.join(both)} are installed together: they write "
                               f"the same `{label}` package, so the last one installed wins and uninstalling one "
                               "breaks the other", f"pip uninstall -y {' '.join(both)} && pip install {keep}"))
    return out


def _versions(found) -> list[Problem]:
    """TensorFlow and Keras versions against the verified ones; tf2onnx against NumPy 2."""
    out: list[Problem] = []
    tf_v = _version(found["tensorflow"][1]) if found["tensorflow"] else None
    if tf_v and tf_v[:2] < (2, 16):
        out.append(Problem("error", "tensorflow-too-old", f"TensorFlow {found['tensorflow'][1]} predates Keras 3 "
                           "(Keras 3 needs TensorFlow >= 2.16)", "pip install 'tensorflow-cpu>=2.21,<2.22'"))
    elif tf_v and tf_v[:2] != VERIFIED["tensorflow"]:
        out.append(Problem("warning", "tensorflow-unverified", f"TensorFlow {found['tensorflow'][1]} is not the verified "
                           "2.21 (export and the parity gates were checked on 2.21 only)",
                           "pip install 'tensorflow-cpu>=2.21,<2.22'"))

    keras_v = _version(found["keras"][1]) if found["keras"] else None
    if keras_v and keras_v[0] < 3:
        out.append(Problem("error", "keras-2", f"Keras {found['keras'][1]} is Keras 2; dlcli builds Keras 3 models",
                           "pip install 'keras>=3.15,<3.16'"))
    elif keras_v and keras_v[:2] != VERIFIED["keras"]:
        out.append(Problem("warning", "keras-unverified", f"Keras {found['keras'][1]} is not the verified 3.15",
                           "pip install 'keras>=3.15,<3.16'"))
    np_v, t2o_v = (_version(found[k][1]) if found[k] else None for k in ("numpy", "tf2onnx"))
    if np_v and t2o_v and np_v[0] >= 2 and t2o_v[:2] < (1, 16):
        out.append(Problem("error", "tf2onnx-numpy2", f"tf2onnx {found['tf2onnx'][1]} does not work with NumPy "
                           f"{found['numpy'][1]} (NumPy 2 removed aliases it uses)", "pip install 'tf2onnx>=1.17'"))
    return out


def _legacy_keras(dists, environ) -> list[Problem]:
    """TF_USE_LEGACY_KERAS and tf_keras (Keras 2) beside Keras 3."""
    out: list[Problem] = []
    legacy = environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")
    flag = f"TF_USE_LEGACY_KERAS={environ.get('TF_USE_LEGACY_KERAS')}"
    if legacy and "tf-keras" in dists:
        out.append(Problem("error", "legacy-keras", f"{flag} is set and tf_keras {dists['tf-keras']} is installed: "
                           "tf.keras is Keras 2, so layers or models made with tf.keras (model.code, custom layers) "
                           "cannot go into dlcli's Keras 3 models", "unset TF_USE_LEGACY_KERAS"))
    elif legacy:
        out.append(Problem("warning", "legacy-keras", f"{flag} is set but tf_keras is not installed: `tf.keras` fails "
                           "to import, so model.code that uses tf.keras breaks (dlcli itself uses `import keras`)",
                           "unset TF_USE_LEGACY_KERAS"))
    elif "tf-keras" in dists:
        out.append(Problem("info", "tf-keras", f"tf_keras {dists['tf-keras']} (Keras 2) is installed; harmless unless "
                           "TF_USE_LEGACY_KERAS=1 is set", "pip uninstall tf-keras (if nothing else needs it)"))
    return out


def _backend(dists, environ) -> list[Problem]:
    """KERAS_BACKEND other than tensorflow."""
    out: list[Problem] = []
    backend = environ.get("KERAS_BACKEND", "").strip()
    if backend and backend != "tensorflow":
        fix = "unset KERAS_BACKEND (or set it to tensorflow)"
        if backend not in KERAS_BACKENDS:
            out.append(Problem("error", "keras-backend", f"KERAS_BACKEND={backend} is not a Keras backend: "
                               "`import keras` fails", fix))
        elif backend == "numpy":
            out.append(Problem("error", "keras-backend", "KERAS_BACKEND=numpy cannot train (no gradients)", fix))
        elif KERAS_BACKENDS[backend] not in dists:
            out.append(Problem("error", "keras-backend", f"KERAS_BACKEND={backend} but {backend} is not installed: "
                               "`import keras` fails", fix))
        else:
            out.append(Problem("warning", "keras-backend", f"KERAS_BACKEND={backend}: dlcli is built and verified on "
                               "the TensorFlow backend only (training and export are untested on others)", fix))
    return out


def _extras(found, dists) -> list[Problem]:
    """tfmot (Keras 2 only), the optional extras, the deprecated TFLite interpreter."""
    out: list[Problem] = []
    if "tensorflow-model-optimization" in dists:
        out.append(Problem("warning", "tfmot", f"tensorflow-model-optimization {dists['tensorflow-model-optimization']} "
                           "is installed: it does not accept Keras 3 models (it needs tf_keras)",
                           "use `dlcli prune` instead; pip uninstall tensorflow-model-optimization"))
    for label, (level, lost, fix) in OPTIONAL.items():
        if not found[label]:
            out.append(Problem(level, f"missing-{label}", f"{label} is not installed: {lost}", fix))
    if found["ai-edge-litert"]:
        out.append(Problem("info", "tf-lite-interpreter", "tf.lite.Interpreter is deprecated and scheduled for deletion; "
                           "dlcli runs .tflite files with LiteRT (ai_edge_litert)",
                           "in your own code: from ai_edge_litert.interpreter import Interpreter"))
    return out


def installed_as(dists: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """(distribution, version) of the first of ``names`` that is installed, or None."""
    return next(((n, dists[n]) for n in names if n in dists), None)


def _version(text: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: '2.21.0rc1' -> (2, 21, 0); '0.dev2026' -> (0,)."""
    nums = []
    for part in text.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        nums.append(int(m.group()))
        if m.end() != len(part):
            break
    return tuple(nums) or (0,)
