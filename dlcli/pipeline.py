"""The recipe pipeline ``dlcli train`` runs after training: compress (distill, then
prune, then quantization-aware training), then export with the parity gate, each stage in its own run directory under
RUN_DIR, and a summary of every stage (size, sparsity, metric) in RUN_DIR/pipeline.json.
"""

from __future__ import annotations

import contextlib
import gzip
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.atomic import write_json
from dlcli.errors import UsageError


def wants_pipeline(recipe) -> bool:
    c = recipe.compress
    return bool(c.prune or c.distill or c.qat or recipe.export.formats)


@dataclass
class Stage:
    name: str
    run_dir: str
    parameters: int
    sparsity: float
    model_bytes: int
    model_gzip_bytes: int
    metric: str
    value: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PipelineResult:
    stages: list[Stage] = field(default_factory=list)  # the chief's summary (empty on other workers)
    export: Any = None
    weights: dict[str, str] = field(default_factory=dict)  # stage -> sha256 of its weights, on every worker

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stages": [s.to_json() for s in self.stages], "weights": self.weights}
        if self.export is not None:
            out["export"] = {"out_dir": str(self.export.out_dir), "passed": not self.export.failed,
                             "artifacts": [{"name": a.name, "status": a.status, "size_bytes": a.size_bytes,
                                            "metric": a.checks.get("artifact_metric"), "error": a.error}
                                           for a in self.export.artifacts]}
        return out


def _stage(name: str, run_dir: Path) -> Stage:
    import json

    import numpy as np

    from dlcli.compress.prune import measure
    from dlcli.rundir import load_keras_model

    model = load_keras_model(run_dir / "model.keras")
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    report = run_dir / "sparsity.json"  # a pruned stage: the sparsity of the kernels it pruned (its target)
    sparsity = json.loads(report.read_text())["pruned_sparsity"] if report.exists() else \
        measure(model)["prunable_sparsity"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    split = metrics.get("test") or metrics.get("validation") or metrics["train"]
    metric = next((k for k in ("accuracy", "mae", "loss") if k in split), next(iter(split)))
    data = (run_dir / "model.keras").read_bytes()
    return Stage(name, str(run_dir), int(total), sparsity, len(data),
                 len(gzip.compress(data, compresslevel=9)), metric, float(split[metric]))


def run_pipeline(recipe, run_dir: Path, *, allow_code: bool = False, log=None, chief: bool = True,
                 progress: str = "none", console=None, quiet_native=None) -> PipelineResult:
    """Distill, then prune, then quantization-aware training, then export the run in
    ``run_dir``, each stage in its own run directory under it. Every training stage goes through the one trainer: a stage that
    finished is kept, an interrupted one resumes. In a multi-worker run every worker trains
    every stage; only the chief writes, summarises and exports."""
    from dlcli.compress.distill import distill
    from dlcli.compress.prune import prune
    from dlcli.compress.qat import qat
    from dlcli.export import export_run

    log = log or (lambda msg: None)
    result = PipelineResult([_stage("train", run_dir)] if chief else [])
    current = run_dir
    c = recipe.compress
    common = {"progress": progress, "console": console, "reuse": True, "log": log}
    if c.distill and not c.distill.student:
        raise UsageError("compress.distill.student: the pipeline needs a student recipe file")
    stages = (  # (name, folder, what the log says, how to run it from the current run)
        ("distill", "distilled", "distilling", c.distill, lambda src, dst: distill(
            src, c.distill.student, dst, temperature=c.distill.temperature, alpha=c.distill.alpha,
            allow_code=allow_code, **common)),
        ("prune", "pruned", "pruning", c.prune, lambda src, dst: prune(src, dst, spec=c.prune, **common)),
        ("qat", "qat", "quantization-aware training", c.qat, lambda src, dst: qat(src, dst, spec=c.qat, **common)),
    )
    for name, folder, doing, spec, run_it in stages:
        if spec is None:
            continue
        log(f"{doing} into {run_dir / folder} ...")
        result.weights[name] = run_it(current, run_dir / folder).weights_sha256
        current = run_dir / folder
        if chief:
            result.stages.append(_stage(name, current))
    if not chief:
        return result
    if recipe.export.formats or c.prune or c.distill or c.qat:
        log(f"exporting {current} ...")
        quantize = recipe.export.quantize
        if c.qat and quantize == "none":
            quantize = "int8"  # what quantization-aware training is for
        with (quiet_native or contextlib.nullcontext)():
            result.export = export_run(current, recipe.export.formats or None, quantize)
    write_json(run_dir / "pipeline.json", {**result.to_json(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    from dlcli import tracking

    tracking.log_files(run_dir, [run_dir / "pipeline.json"], log=log)
    return result
