"""One trial: an ordinary run directory trained by the one trainer, then (when an objective
is a device cost) exported to int8 TFLite through the parity gate and timed natively."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import ModelError, ShapeMismatchError, TrainingDivergedError
from dlcli.recipe.tune import COSTS

LATENCY_WARMUP, LATENCY_RUNS = 20, 200  # batch-1 native timing of each trial's int8 file


@dataclass
class Outcome:
    state: str  # complete | pruned | failed
    values: list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)  # feasible when every value <= 0


def pruning_callback(trial, monitor: str):
    """Reports the validation metric every epoch; stops a trial the pruner gives up on."""
    import keras

    class TrialPruning(keras.callbacks.Callback):
        pruned_at: int | None = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None or not math.isfinite(float(value)):
                return
            with warnings.catch_warnings():  # a resumed trial reports its epochs again: Optuna keeps the first
                warnings.simplefilter("ignore")
                trial.report(float(value), epoch + 1)
            if trial.should_prune():
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return TrialPruning()


def run(trial_dir: Path, recipe, names: list[str], callbacks: list, ctx) -> Outcome:
    """Train (or continue) the trial's run directory, then measure what the objectives ask."""
    from dlcli.train import train

    done = _completed_metrics(trial_dir)
    if done is None:
        try:
            result = train(recipe, trial_dir, pipeline=False, callbacks=callbacks, progress="none",
                           log=ctx.log, allow_code=ctx.allow_code, console=None)
        except (TrainingDivergedError, ModelError, ShapeMismatchError) as exc:
            return Outcome("failed", attrs={"error": str(exc)})
        done = result.metrics
    pruned = next((c.pruned_at for c in callbacks if getattr(c, "pruned_at", None)), None)
    attrs: dict[str, Any] = {"run_dir": str(trial_dir)}
    attrs.update({f"validation_{k}": float(v) for k, v in done.get("validation", {}).items()})
    if pruned is not None:
        return Outcome("pruned", attrs={**attrs, "pruned_at_epoch": pruned})
    costs, gate, error = measure(trial_dir, [n for n in names if n in COSTS], ctx)
    attrs.update(costs)
    if error:
        return Outcome("failed", attrs={**attrs, "error": error})
    values = [costs[n] if n in COSTS else float(done["validation"][n]) for n in names]
    if gate is None:
        return Outcome("complete", values, attrs)
    attrs["int8_gate"] = "; ".join(gate) if gate else "passed"
    return Outcome("complete", values, attrs, {"int8_gate": float(len(gate))})


def _completed_metrics(trial_dir: Path) -> dict | None:
    """The metrics of a trial that finished training before its process was killed."""
    try:
        env = json.loads((trial_dir / "env.json").read_text(encoding="utf-8"))
        if env.get("status") == "completed":
            return json.loads((trial_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return None


def measure(trial_dir: Path, costs: list[str], ctx) -> tuple[dict[str, float], list[str] | None, str | None]:
    """``(costs, gate failures, error)``. An int8 file that converts but fails its parity gate
    is still measured; the failures make the trial infeasible (an Optuna constraint), so it
    never reaches the Pareto front or best.yaml. No int8 file at all fails the trial."""
    out: dict[str, float] = {}
    env = json.loads((trial_dir / "env.json").read_text(encoding="utf-8"))
    out["parameters"] = float(env.get("parameters", 0))
    if not any(c.startswith("int8_") for c in costs):
        return out, None, None
    from dlcli.export import export_run
    from dlcli.latency import tflite

    with ctx.quiet_native():
        result = export_run(trial_dir, ["tflite"], "int8", log=ctx.log)
    art = next((a for a in result.artifacts if a.name == "model_int8.tflite"), None)
    if art is None or art.error or not art.size_bytes:
        return out, None, f"the int8 TFLite export failed: {art.failure() if art else 'no int8 artifact'}"
    gate = [] if art.status == "passed" else list(art.checks.get("failures", [])) or [art.failure()]
    out["int8_size_kb"] = art.size_bytes / 1024
    if "int8_latency_ms" in costs:
        with ctx.quiet_native():
            native = tflite(Path(art.path) if Path(art.path).is_absolute() else result.out_dir / art.path,
                            threads=1, warmup=LATENCY_WARMUP, runs=LATENCY_RUNS)
        if native.skipped:
            return out, gate, f"LiteRT could not time the int8 file: {native.skipped}"
        out["int8_latency_ms"] = float(native.latency_ms["p50"])
    return out, gate, None
