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

from dlcli.recipe.schema import CALIBRATED, ONNX_CALIBRATIONS, ONNX_QUANTIZE_MODES, QUANTIZE_MODES
from dlcli.runs import owner_alive

FORMAT_ORDER = ("saved_model", "tflite", "onnx")
MIN_CALIBRATION_ROWS = 100  # fewer representative rows than this gets a warning


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
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest(), path.stat().st_size
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


def export_run(run_dir: str | Path, formats: list[str] | None = None, quantize: str | None = None,
               out_dir: str | Path | None = None, representative_samples: int | None = None,
               gate=None, opset: int | None = None, int8_float_fallback: bool | None = None,
               tflite_batch_size: int | str | None = None, parity_samples: int | None = None,
               int8_per_channel: bool | None = None, log=None,
               include_preprocessing: bool | None = None, onnx_quantize: str | None = None,
               onnx_calibration: str | None = None, options: dict[str, Any] | None = None) -> ExportResult:
    """Export ``run_dir``'s model; the recipe's ``export:`` section fills unset arguments.
    ``include_preprocessing``: the artifacts take raw feature values (the gate feeds them).
    ``options``: ``export:`` keys overriding the recipe's (validated by its schema), e.g.
    ``{"fallback": "auto", "explain": True}``."""
    import numpy as np

    from dlcli.atomic import copy_file, write_json
    from dlcli.errors import UsageError
    from dlcli.export.parity import compare, resolve_gate, task_metric
    from dlcli.export.registry import get_format
    from dlcli.export.signature import has_recurrent_layers
    from dlcli.inspect import open_run, run_split

    log = log or (lambda msg: None)
    run = open_run(run_dir)
    spec = run.recipe.export
    if options:
        from pydantic import ValidationError

        try:
            spec = type(spec).model_validate({**spec.model_dump(), **options})
        except ValidationError as exc:
            raise UsageError(f"export options {options}: {exc.errors()[0]['msg']}") from exc
    formats = list(formats or spec.formats or FORMAT_ORDER)
    for f in formats:
        get_format(f)
    quantize = quantize or spec.quantize
    if quantize not in QUANTIZE_MODES:
        raise UsageError(f"--quantize {quantize!r}: expected one of {', '.join(QUANTIZE_MODES)}")
    onnx_quantize = onnx_quantize or spec.onnx_quantize
    onnx_calibration = onnx_calibration or spec.onnx_calibration
    for flag, value, allowed in (("--onnx-quantize", onnx_quantize, ONNX_QUANTIZE_MODES),
                                 ("--onnx-calibration", onnx_calibration, ONNX_CALIBRATIONS)):
        if value not in allowed:
            raise UsageError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")
    n_rep = representative_samples or spec.representative_samples
    n_parity = parity_samples or spec.parity_samples
    gate_overrides = gate if gate is not None else spec.gate
    out = Path(out_dir) if out_dir else run.path / "export"
    _make_folder(out)

    model = run.load_model()
    task = run.recipe.task
    parity_split = run.split_names()[-1]  # test, else validation, else train
    raw = spec.include_preprocessing if include_preprocessing is None else include_preprocessing
    raw = raw and task != "gan"  # a generator takes latents: nothing to preprocess
    first = lambda n: np.arange(min(n, n_parity))
    if task == "gan":  # the generator on fixed latents (and labels); the gate compares its samples
        x_test, parity_split = gan_inputs(run, n_parity, 13), "latent"
    else:
        x_test, y_test = run_split(run, parity_split, pick=first)
    ref = np.asarray(model.predict(x_test, verbose=0, batch_size=256))
    y_test = ref if task == "gan" else y_test
    exported_model = model
    if raw:  # the artifacts take (and the gate feeds) the values before reshape and normalization
        from dlcli.export.preprocessing import with_preprocessing

        x_test, _ = run_split(run, parity_split, pick=first, normalize=False)
        exported_model = with_preprocessing(model, run.preprocessor, x_test)
    k_name, k_value = task_metric(ref, y_test, task)
    keras_info = {"metric": k_name, "value": k_value, "samples": len(y_test), "split": parity_split,
                  "parameters": int(model.count_params())}

    batch_setting = tflite_batch_size if tflite_batch_size is not None else spec.tflite_batch_size
    if batch_setting == "auto":
        tflite_batch = 1 if has_recurrent_layers(exported_model) else None
    else:
        tflite_batch = None if batch_setting == "dynamic" else int(batch_setting)
    jobs: list[tuple[str, str]] = []
    for f in sorted(formats, key=FORMAT_ORDER.index):
        jobs.append((f, "none"))
        if f == "tflite" and quantize != "none":
            jobs.append((f, quantize))
        if f == "onnx" and onnx_quantize != "none":  # static int8 / dynamic through onnxruntime.quantization
            jobs.append((f, onnx_quantize))
    rep, calibration = None, None
    if any(q in CALIBRATED for _, q in jobs) and task == "gan":  # calibrated on other latents than the gate's
        rep = gan_inputs(run, n_rep, 17)
        calibration = calibration_report(np.zeros(n_rep), task, None)
    elif any(q in CALIBRATED for _, q in jobs):  # TFLite int8 / int16x8, ONNX int8
        rep, rep_y = run_split(run, "train", normalize=not raw,
                               pick=lambda n: np.sort(np.random.default_rng(run.recipe.seed).permutation(n)[:n_rep]))
        calibration = calibration_report(rep_y, task, run.preprocessor.labels)

    sweep_stale_temps(out)
    artifacts = []
    for fmt_name, q in jobs:
        fmt = get_format(fmt_name)
        name = artifact_name(fmt_name, q)
        target = out / name
        art = Artifact(name, fmt_name, q, name, fmt.runtime, preprocessing="included" if raw else "separate")
        plan = Plan(q, rep, tflite_batch, int8_float_fallback if int8_float_fallback is not None
                    else spec.int8_float_fallback, opset or spec.opset,
                    spec.int8_per_channel if int8_per_channel is None else int8_per_channel,
                    onnx_calibration)
        log(f"exporting {name} ...")
        tmp = out / f".{name}.tmp-{os.getpid()}{fmt.suffix}"
        t0 = time.perf_counter()
        try:
            fmt.export(exported_model, tmp, plan)
            art.conversion_seconds = round(time.perf_counter() - t0, 3)
            if not tmp.exists() or (tmp.is_file() and tmp.stat().st_size == 0):
                raise RuntimeError("the converter reported success but produced no file")
            _place(tmp, target)
        except Exception as exc:  # noqa: BLE001 - any converter failure is recorded, not fatal
            art.error = f"conversion failed: {type(exc).__name__}: {_first_line(exc)}"
            art.conversion_seconds = round(time.perf_counter() - t0, 3)
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            artifacts.append(art)
            continue
        art.sha256, art.size_bytes = sha256_path(target)
        try:
            runner = fmt.load(target)
            art.inputs = [t.to_json() for t in runner.inputs]
            art.outputs = [t.to_json() for t in runner.outputs]
            got = runner.predict(x_test)
        except Exception as exc:  # noqa: BLE001 - the runtime refusing the artifact is a failure
            art.error = f"{fmt.runtime} could not run it: {type(exc).__name__}: {_first_line(exc)}"
            artifacts.append(art)
            continue
        checks = compare(ref, got, y_test, task, resolve_gate(q, task, gate_overrides), art.outputs[0]["name"],
                         art.outputs[0])
        if fmt_name == "tflite" and q == "int8" and (spec.explain or (spec.fallback == "auto" and not checks.passed)):
            def gate_file(path, fmt=fmt, q=q):
                runner = fmt.load(path)
                return compare(ref, runner.predict(x_test), y_test, task, resolve_gate(q, task, gate_overrides),
                               runner.outputs[0].name, runner.outputs[0].to_json())

            checks = _quant_debug(art, target, exported_model, plan, spec, checks, gate_file, log)
        if fmt_name == "tflite":
            _inspect_tflite(art, target)
        art.checks = checks.to_json()
        art.status = "passed" if checks.passed else "failed"
        artifacts.append(art)

    for extra in ("preprocessing.json", "labels.txt", "anomaly.json"):
        if (run.path / extra).exists() and out.resolve() != run.path.resolve():
            copy_file(run.path / extra, out / extra)
    result = ExportResult(run.path, out, artifacts, keras_info, calibration)
    manifest = result.manifest()
    # keep earlier artifacts of this folder that this call did not re-export (and that still exist)
    previous = out / "manifest.json"
    if previous.exists():
        import json

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
    from dlcli import tracking

    tracking.log_files(run.path, [out], log=log)  # the run's MLflow run, when it has one
    return result


def gan_inputs(run, n: int, offset: int):
    """``n`` fixed generator inputs of a GAN run (seeded by the recipe's seed + ``offset``)."""
    from dlcli.gan.scoring import latent_inputs

    return latent_inputs(run.recipe.model.gan, n, run.recipe.seed + offset, len(run.preprocessor.labels or []))


def calibration_report(y, task: str, labels: list[str] | None) -> dict[str, Any]:
    """How many rows calibrate the quantized files, and (classification) the classes they
    miss: ranges calibrated without a class can clip what only that class produces."""
    import numpy as np

    y = np.asarray(y)
    out: dict[str, Any] = {"rows": len(y), "warnings": []}
    if len(y) < MIN_CALIBRATION_ROWS:
        out["warnings"].append(f"quantization calibrated on {len(y)} rows, fewer than {MIN_CALIBRATION_ROWS}: "
                               "ranges the test data reaches may be clipped (raise export.representative_samples)")
    if task == "classification" and labels:
        ids = y.argmax(-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
        missing = [labels[i] for i in sorted(set(range(len(labels))) - {int(v) for v in ids})]
        out["classes_missing"] = missing
        if missing:
            out["warnings"].append(f"the calibration rows hold no example of {len(missing)} class(es): "
                                   f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    return out


def _quant_debug(art: Artifact, target: Path, model, plan, spec, checks, gate_file, log):
    """int8 TFLite: per-layer errors (explain) and, when the gate failed and fallback is
    auto, the worst layers kept in float until it passes. Returns the checks of the file kept."""
    from dlcli.export.sensitivity import auto_fallback, debug
    from dlcli.export.tflite import load

    log(f"measuring the quantization error of every layer of {art.name} ...")
    dbg, layers = debug(model, plan)
    art.sensitivity = [e.to_json() for e in layers]
    if checks.passed or spec.fallback != "auto":
        return checks
    record, fixed = auto_fallback(dbg, layers, target, gate_file, spec.fallback_budget, log)
    art.fallback = {**record, "plain": {"size_bytes": art.size_bytes, "checks": checks.to_json()}}
    if fixed is None:
        art.warnings.append(f"--fallback auto: the gate still fails with {len(record['steps'])} layer(s) in float "
                            f"(fallback_budget {spec.fallback_budget}); the int8 file without fallback is kept")
        return checks
    art.sha256, art.size_bytes = sha256_path(target)
    runner = load(target)
    art.inputs = [t.to_json() for t in runner.inputs]
    art.outputs = [t.to_json() for t in runner.outputs]
    art.warnings.append(f"--fallback auto kept {len(record['layers'])} layer(s) in float to pass the gate: "
                        + ", ".join(s["op"] for s in record["steps"]) + "; the file takes and returns float")
    return fixed


def _inspect_tflite(art: Artifact, path: Path) -> None:
    """What a TFLite file holds beyond its outputs: XNNPACK delegation, the ops an int8 file
    runs in float, and whether a quantized file quantized anything at all."""
    from dlcli import mcu
    from dlcli.latency import delegation

    art.delegation = delegation(path)
    if art.quantization == "none":
        return
    info = mcu.inspect_model(path.read_bytes())
    if art.quantization in CALIBRATED:
        art.float_ops = mcu.float_ops(info)
        if art.float_ops and not (art.fallback or {}).get("passed"):  # a fallback's float ops are said already
            art.warnings.append(f"ops run in float inside the {art.quantization} model: {', '.join(art.float_ops)} "
                                "(dlcli validate RECIPE --target tflite-int8 names the recipe keys)")
    want = "FLOAT16" if art.quantization == "float16" else "INT8"
    if not info.constants.get(want):
        art.warnings.append(f"nothing was quantized: the file holds no {want.lower()} weights"
                            + (" (dynamic-range quantization leaves weight tensors under 1,024 values in float)"
                               if art.quantization == "dynamic" else ""))


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else ""
