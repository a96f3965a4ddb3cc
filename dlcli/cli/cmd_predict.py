from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console


@handle_errors
def predict(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR|ARTIFACT",
                                   help="A finished run, or an exported .tflite / .onnx / SavedModel."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help=".npy, .npz, .csv, image file or folder, .txt; "
                                      "a GAN's generator: a number of samples, or a .npy / .npz of latent vectors"),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes to show per example."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Allow a SavedModel that dlcli did not export "
                                    "(it runs its own graph)."),
    out: Path = typer.Option(None, "--out", help="Also save every output whole (e.g. an autoencoder's "
                             "reconstructions) to FILE.npz: arrays `outputs` and `inputs` (the input names); a "
                             "generator's samples also to a folder: one PNG each, grid.png, samples.npz."),
    label: str = typer.Option(None, "--label", help="Conditional generator: draw this class (name or id) only."),
    seed: int = typer.Option(None, "--seed", help="Generator: seed of the latent draws (default: the recipe's)."),
) -> None:
    """Predict with a run's model or an exported artifact.

    Applies the training preprocessing, and int8 quantization of inputs and
    dequantization of outputs for int8 models."""
    quiet_frameworks()
    from dlcli.errors import UsageError
    from dlcli.predict import predict as predict_fn

    with native_quiet():
        pred = predict_fn(run_dir, input_path, top_k, allow_code, label, seed)
    if out is not None and pred.value_range is not None and out.suffix != ".npz":
        from dlcli.gan.sample import write_samples

        write_samples(out, pred.outputs, pred.value_range)
    elif out is not None:
        if out.suffix != ".npz":
            raise UsageError(f"--out {out}: give a .npz file name")
        pred.save(out)
    if json_out:
        emit_json(pred.to_json())
        return
    from rich.table import Table

    rows = pred.rows()
    table = Table("input", "prediction", "top classes" if pred.labels else "output")
    for row in rows:
        shown = row["input"] if len(row["input"]) <= 40 else row["input"][:39] + "…"  # --json has it whole
        if "anomaly" in row:
            verdict = "anomaly" if row["anomaly"] else "normal"
            table.add_row(shown, verdict, f"{pred.anomaly['score']} {row['score']:.4g} "
                          f"(threshold {pred.anomaly['threshold']:.4g})")
        elif pred.labels:
            table.add_row(shown, row["label"],
                          ", ".join(f"{t['label']} {t['probability']:.3f}" for t in row["top"]))
        else:
            out = row["output"]
            table.add_row(shown, "", str(out if not isinstance(out, list) or len(out) < 8 else f"{len(out)} values"))
    stdout_console().print(table)
