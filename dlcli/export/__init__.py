"""Export a trained run to SavedModel, TFLite and ONNX, and prove each artifact.

``export_run(run_dir, ...) -> ExportResult``. Every artifact is converted into a
temporary name and renamed into place, then loaded in its real runtime
(``tf.saved_model.load``, ``ai_edge_litert``, ``onnxruntime``) and compared with the
Keras model on held-out test samples by the parity gate (:mod:`dlcli.export.parity`).
``RUN_DIR/export/manifest.json`` records every artifact: format, quantization, path,
size, sha256, inputs / outputs (with int8 scale and zero point), conversion time and
check results. A failed artifact is kept and marked failed.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import raise_if_bug
from dlcli.export.quality import _inspect_tflite, _onnx_debug, _quant_debug, calibration_report
from dlcli.export.reference import Reference, reference_of
from dlcli.recipe.schema import CALIBRATED
from dlcli.rundir import owner_alive

FORMAT_ORDER = ("saved_model", "tflite", "onnx")


@dataclass
class Plan:
    quantize: str
    representative: Any = None
    tflite_batch: int | None = None
    int8_float_fallback: bool = False
    opset: int | None = None
    int8_per_channel: bool = True
    onnx_calibration: str = "minmax"  # ONNX int8: minmax | entropy | percentile


@dataclass
class Artifact:
    name: str
    format: str
    quantization: str
    path: str
    runtime: str
    status: str = "failed"  # passed | failed
    size_bytes: int = 0
    sha256: str = ""
    conversion_seconds: float = 0.0
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    preprocessing: str = "separate"  # included: the artifact takes raw values (export.include_preprocessing)
    delegation: dict[str, Any] | None = None  # TFLite: what LiteRT's CPU accelerator runs (dlcli.latency)
    float_ops: list[str] | None = None  # int8 TFLite: ops that run in float inside it
    warnings: list[str] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] | None = None  # int8 TFLite (explain / fallback): per-layer error
    fallback: dict[str, Any] | None = None  # int8 TFLite, --fallback auto: the layers kept in float, each step

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if not (k in ("error", "delegation", "float_ops", "sensitivity", "fallback") and v is None)
                and not (k == "warnings" and not v)}

    def failure(self) -> str:
        if self.error:
            return self.error
        return "; ".join(self.checks.get("failures", [])) + f" (output {self.checks.get('output')!r})"


@dataclass
class ExportResult:
    run_dir: Path
    out_dir: Path
    artifacts: list[Artifact]
    keras: dict[str, Any]
    calibration: dict[str, Any] | None = None  # rows and missing classes of int8 / int16x8 calibration
    part: str | None = None  # "decoder": a VAE's decoder, not the run's model

    @property
    def failed(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.status != "passed"]

    def manifest(self) -> dict[str, Any]:
        import dlcli

        return {
            "format": "dlcli-export-manifest/1",
            "dlcli": dlcli.__version__,
            "run_dir": str(self.run_dir.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "keras": self.keras,
            "passed": not self.failed,
            **({"part": self.part} if self.part else {}),
            **({"calibration": self.calibration} if self.calibration else {}),
            "artifacts": [a.to_json() for a in self.artifacts],
        }

    def raise_for_failures(self) -> None:
        from dlcli.errors import ParityError

        if not self.failed:
            return
        worst = self.failed[0]
        raise ParityError(
            f"{len(self.failed)} of {len(self.artifacts)} artifacts failed: {worst.name} "
            f"({worst.format} {worst.quantization}): {worst.failure()}; see {self.out_dir / 'manifest.json'}"
        )


def sha256_path(path: Path) -> tuple[str, int]:
    """sha256 and size of a file (the plain ``sha256sum`` of its bytes), or of a directory
    (sha256 over each file's relative name and the sha256 of its bytes, sorted by name)."""
    if path.is_file():
        from dlcli.atomic import sha256_stream

        with open(path, "rb") as fh:
            return sha256_stream(fh)
    h = hashlib.sha256()
    size = 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        data = f.read_bytes()
        size += len(data)
        h.update(str(f.relative_to(path)).encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest(), size


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(\.[A-Za-z0-9]+)?$")


def _make_folder(out: Path) -> None:
    """The export folder (``--out``): an existing folder, or one that can be made."""
    from dlcli.errors import OutputError

    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; --out names the export folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot make the export folder: {exc.strerror or exc}") from exc


def sweep_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary artifacts (``.NAME.tmp-PID``) that an export killed mid-way left
    in ``out``: only names of that form, and only when process PID is gone."""
    removed = []
    for p in out.iterdir() if out.is_dir() else []:
        m = _TEMP.match(p.name)
        if m is None or int(m["pid"]) == os.getpid() or owner_alive(platform.node(), int(m["pid"])):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _place(tmp: Path, target: Path) -> None:
    """Move a finished artifact into place (a file or a directory), replacing an old one."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def artifact_name(fmt: str, quantization: str) -> str:
    if fmt == "onnx":
        return "model.onnx" if quantization == "none" else f"model_{quantization}.onnx"
    return "saved_model" if fmt == "saved_model" else f"model_{'float32' if quantization == 'none' else quantization}.tflite"


_FLAGS = {"formats": "--saved-model / --tflite / --onnx", "representative_samples": "--representative-samples"}


def export_options(spec, overrides: dict[str, Any]):
    """The recipe's ``export:`` section with ``overrides`` (CLI flags, library arguments)
    applied and validated by its schema: the one options object of an export."""
    from dlcli.recipe.overrides import apply_overrides

    return apply_overrides(spec, overrides, _FLAGS)


def export_run(run_dir: str | Path, formats: list[str] | None = None, quantize: str | None = None,
               out_dir: str | Path | None = None, *, log=None, part: str | None = None,
               **options: Any) -> ExportResult:
    """Export ``run_dir``'s model into ``out_dir`` (default RUN_DIR/export; ``part="decoder"``:
    a VAE's decoder, into export/decoder). ``options`` are keys of the recipe's ``export:``
    section (``int8_float_fallback=True``, ``gate=GateSpec(...)``, ``fallback="auto"`` ...):
    laid over the run's own section and validated by its schema (:func:`export_options`),
    the one options object; None values leave the recipe's."""
    from dlcli import tracking
    from dlcli.rundir import open_run

    log = log or (lambda msg: None)
    run = open_run(run_dir)
    spec = export_options(run.recipe.export, {**options, "formats": formats or None, "quantize": quantize})
    out = Path(out_dir) if out_dir else run.path / "export" / (part or "")
    reference = reference_of(run, spec, part)
    _make_folder(out)
    jobs = _jobs(spec)
    rep, calibration = _calibration(run, spec, jobs, reference)
    sweep_stale_temps(out)
    batch = _tflite_batch(spec, reference.model)
    artifacts = [_export_one(fmt, q, out, Plan(q, rep, batch, spec.int8_float_fallback, spec.opset,
                                                   spec.int8_per_channel, spec.onnx_calibration),
                             reference, spec, log) for fmt, q in jobs]
    _note_unrolled_size(artifacts, reference.model, spec)
    run.copy_beside(out)
    result = ExportResult(run.path, out, artifacts, reference.keras, calibration, part)
    _write_manifest(result, out)
    tracking.log_files(run.path, [out], log=log)  # the run's MLflow run, when it has one
    return result


def _note_unrolled_size(artifacts: list[Artifact], model, spec) -> None:
    """An int8 TFLite file of a recurrent model is unrolled (the fused kernels crash the
    converter): say so when that leaves it larger than a third of the float32 file."""
    from dlcli.export.signature import has_recurrent_layers

    sizes = {a.quantization: a.size_bytes for a in artifacts if a.format == "tflite" and a.size_bytes}
    if not sizes.get("none") or not has_recurrent_layers(model):
        return
    for art in artifacts:
        ratio = art.size_bytes / sizes["none"]
        if art.format == "tflite" and art.quantization in CALIBRATED and art.size_bytes and ratio > 0.35:
            art.warnings.append(f"{ratio:.2f}x the float32 file: the recurrent layers are unrolled for "
                                f"{art.quantization} (their fused kernels crash the converter), which repeats ops, "
                                "biases and scales at every step" + (
                                    "; --int8-per-tensor stores one scale per tensor instead of one per channel"
                                    if spec.int8_per_channel else ""))


def _jobs(spec) -> list[tuple[str, str]]:
    """(format, quantization) of every artifact, in format order."""
    from dlcli.export.registry import get_format

    formats = list(spec.formats or FORMAT_ORDER)
    for f in formats:
        get_format(f)
    jobs: list[tuple[str, str]] = []
    for f in sorted(formats, key=FORMAT_ORDER.index):
        jobs.append((f, "none"))
        if f == "tflite" and spec.quantize != "none":
            jobs.append((f, spec.quantize))
        if f == "onnx" and spec.onnx_quantize != "none":  # static int8 / dynamic through onnxruntime.quantization
            jobs.append((f, spec.onnx_quantize))
    return jobs


def _tflite_batch(spec, model) -> int | None:
    from dlcli.export.signature import has_recurrent_layers

    if spec.tflite_batch_size == "auto":
        return 1 if has_recurrent_layers(model) else None
    return None if spec.tflite_batch_size == "dynamic" else int(spec.tflite_batch_size)


def _calibration(run, spec, jobs, reference: Reference):
    """The representative rows of int8 / int16x8 TFLite and int8 ONNX, and their report."""
    import numpy as np

    from dlcli.rundir import run_split

    if not any(q in CALIBRATED for _, q in jobs):
        return None, None
    n = spec.representative_samples
    if reference.latents is not None:  # calibrated on other latents than the gate's
        return reference.latents(n, 17), calibration_report(np.zeros(n), "gan", None)
    rep, rep_y = run_split(run, "train", normalize=not reference.raw,
                           pick=lambda k: np.sort(np.random.default_rng(run.recipe.seed).permutation(k)[:n]))
    return rep, calibration_report(rep_y, run.recipe.task, run.preprocessor.labels)


def _export_one(fmt_name: str, q: str, out: Path, plan: Plan, reference: Reference, spec, log) -> Artifact:
    """Convert one artifact into a temporary name, move it into place, run it in its runtime
    and gate it. A converter or runtime failure is recorded in the artifact."""
    from dlcli.export.registry import get_format

    fmt = get_format(fmt_name)
    name = artifact_name(fmt_name, q)
    target = out / name
    art = Artifact(name, fmt_name, q, name, fmt.runtime, preprocessing="included" if reference.raw else "separate")
    log(f"exporting {name} ...")
    tmp = out / f".{name}.tmp-{os.getpid()}{fmt.suffix}"
    t0 = time.perf_counter()
    try:
        fmt.export(reference.model, tmp, plan)
        art.conversion_seconds = round(time.perf_counter() - t0, 3)
        if not tmp.exists() or (tmp.is_file() and tmp.stat().st_size == 0):
            raise RuntimeError("the converter reported success but produced no file")
        _place(tmp, target)
    except Exception as exc:  # noqa: BLE001 - any converter failure is recorded, not fatal
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise_if_bug(exc)  # a dlcli bug is not a failed artifact: exit 1 with its traceback
        art.error = f"conversion failed: {type(exc).__name__}: {_first_line(exc)}"
        art.conversion_seconds = round(time.perf_counter() - t0, 3)
        return art
    art.sha256, art.size_bytes = sha256_path(target)
    checks = _gate(art, fmt, target, reference, spec.gate)
    if checks is None:
        return art
    debug = spec.explain or (spec.fallback == "auto" and not checks.passed)
    if fmt_name == "tflite" and q == "int8" and debug:
        checks = _quant_debug(art, target, reference.model, plan, spec, checks,
                              lambda path: _gate(None, fmt, path, reference, spec.gate), log)
    if fmt_name == "onnx" and q == "int8" and debug:
        checks = _onnx_debug(art, target, plan, spec, checks, lambda path: _gate(None, fmt, path, reference, spec.gate),
                             log)
    if fmt_name == "tflite":
        _inspect_tflite(art, target)
        if art.float_ops and q == "int8" and not plan.int8_float_fallback and not (art.fallback or {}).get("passed"):
            checks.failures.append(f"ops run in float inside the int8 model: {', '.join(art.float_ops)} (allow them "
                                   "with --int8-float-fallback, or see dlcli validate RECIPE --target tflite-int8)")
    art.checks = checks.to_json()
    art.status = "passed" if checks.passed else "failed"
    return art


def _gate(art: Artifact | None, fmt, path: Path, reference: Reference, gate):
    """The artifact at ``path`` in its runtime against the Keras outputs (its tensors recorded
    in ``art``); None, with the error in ``art``, when the runtime refuses it."""
    from dlcli.export.parity import compare, resolve_gate

    try:
        runner = fmt.load(path)
        got = runner.predict(reference.x)
    except Exception as exc:  # the runtime refusing the artifact is a failure (a fallback candidate: raised)
        raise_if_bug(exc)
        if art is None:
            raise
        art.error = f"{fmt.runtime} could not run it: {type(exc).__name__}: {_first_line(exc)}"
        return None
    outputs = [t.to_json() for t in runner.outputs]
    if art is not None:
        art.inputs, art.outputs = [t.to_json() for t in runner.inputs], outputs
    quantization = art.quantization if art is not None else "int8"
    if quantization == "none" and fmt.name == "onnx" and is_quantization_aware(reference.model):
        quantization = "int8"  # tf2onnx turns fake quantization into QuantizeLinear / DequantizeLinear
        if art is not None:
            art.warnings.append("quantization-aware model: onnxruntime runs its fake quantization as "
                                "QuantizeLinear / DequantizeLinear, so it is gated as int8")
    return compare(reference.ref, got, reference.y, reference.task, resolve_gate(quantization, reference.task, gate),
                   outputs[0]["name"], outputs[0])


def is_quantization_aware(model) -> bool:
    """Whether ``model`` holds dlcli's fake-quantizing layers (a ``dlcli qat`` run)."""
    return any(hasattr(layer, "range_min") for layer in model._flatten_layers(include_self=False))


def _write_manifest(result: ExportResult, out: Path) -> None:
    """manifest.json, keeping the earlier artifacts of this folder that this call did not
    re-export (and that still exist)."""
    import json

    from dlcli.atomic import write_json

    manifest = result.manifest()
    previous = out / "manifest.json"
    if previous.exists():
        try:
            old = json.loads(previous.read_text())
        except ValueError:
            old = {}
        if old.get("run_dir") == manifest["run_dir"]:
            names = {a["name"] for a in manifest["artifacts"]}
            kept = [a for a in old.get("artifacts", []) if a["name"] not in names and (out / a["path"]).exists()]
            manifest["artifacts"] = kept + manifest["artifacts"]
            manifest["passed"] = all(a["status"] == "passed" for a in manifest["artifacts"])
    write_json(out / "manifest.json", manifest)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else ""
