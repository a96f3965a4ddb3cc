from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli import options
from dlcli.cli.choices import choice, plain
from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console
from dlcli.recipe.schema import PruneSpec


@handle_errors
def prune(
    run_dir: Path = typer.Argument(..., help="A finished run to prune."),
    sparsity: float = typer.Option(None, "--sparsity", help="Target fraction of zeros, in [0, 1) (default 0.8)."),
    schedule: choice(PruneSpec, "schedule") = typer.Option(None, "--schedule", help="Sparsity schedule "
                                                           "(default polynomial)."),
    structure: choice(PruneSpec, "structure") = typer.Option(None, "--structure", help="Which zeros: any "
                                                             "(unstructured, default) or 2 of every 4."),
    scope: choice(PruneSpec, "scope") = typer.Option(None, "--scope", help="global (default): one magnitude threshold across kernels; "
                              "layer: the target in every kernel."),
    min_size: int = typer.Option(None, "--min-size", min=0, help="Kernels with fewer weights stay dense "
                                 "(default 1024; 0 prunes every kernel)."),
    keep_first_conv: bool = typer.Option(None, "--keep-first-conv/--prune-first-conv",
                                         help="Leave the first convolution dense (default: keep it)."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Fine-tuning epochs (default 10)."),
    learning_rate: float = typer.Option(None, "--learning-rate", help="Fine-tuning rate (default: training rate / 3)."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Layer name to leave dense; repeatable."),
    out: Path = typer.Option(None, "--run-dir", "-o", help="New run directory (default: RUN_DIR-pruned)."),
    set_: list[str] = options.SOURCE_SET,
    overwrite: bool = options.OVERWRITE,
    resume: bool = options.RESUME,
    json_out: bool = options.JSON,
    quiet: bool = options.QUIET,
) -> None:
    """Magnitude-prune a trained model into a new run (Keras 3, no tfmot).

    Fine-tunes while the smallest weights stay exactly zero; writes a plain model.keras
    and sparsity.json."""
    quiet_frameworks()
    from dlcli.compress.prune import prune as prune_fn

    with native_quiet():
        res = prune_fn(run_dir, out, overwrite=overwrite, resume=resume, overrides=set_ or None,
                       progress="none" if (json_out or quiet) else "plain",
                       sparsity=sparsity, schedule=plain(schedule), structure=plain(structure), scope=plain(scope),
                       epochs=epochs, exclude=exclude or None, learning_rate=learning_rate, min_size=min_size,
                       keep_first_conv=keep_first_conv)
    if json_out:
        emit_json({**res.to_json(), "layers": res.sparsity["layers"]})
        return
    from rich.table import Table

    t = Table(title=f"{res.run_dir}  (pruned from {res.source})", title_justify="left")
    for col in ("layer", "shape", "pruned", "zeros", "sparsity"):
        t.add_column(col, justify="left" if col in ("layer", "shape", "pruned") else "right")
    for layer in res.sparsity["layers"]:
        t.add_row(layer["layer"], "x".join(map(str, layer["shape"])), "yes" if layer["pruned"] else "no (dense)",
                  str(layer["zeros"]), f"{layer['sparsity']:.3f}")
    t.add_row("[bold]pruned kernels[/]", "", "", "", f"[bold]{res.sparsity['pruned_sparsity']:.3f}[/]")
    t.add_row("all prunable kernels", "", "", "", f"{res.sparsity['prunable_sparsity']:.3f}")
    console = stdout_console()
    console.print(t)
    s = res.sizes
    if "tflite_gzip" in s:
        console.print(f"gzip size: model.keras {s['model_keras_gzip']:,} B (dense {s['dense_model_keras_gzip']:,}), "
                      f"TFLite {s['tflite_gzip']:,} B (dense {s['dense_tflite_gzip']:,}, "
                      f"{s['tflite_gzip'] / s['dense_tflite_gzip']:.2f}x)")
    split = "test" if "test" in res.metrics else "train"
    console.print(f"{split}: " + "  ".join(f"{k} {v:.4f} (dense {res.dense_metrics[split][k]:.4f})"
                                          for k, v in res.metrics[split].items()))
