from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.choices import named, plain
from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console
from dlcli.preflight import TARGETS


@handle_errors
def validate(
    recipe: Path = typer.Argument(..., help="Recipe file."),
    set_: list[str] = typer.Option([], "--set", help="Override KEY.PATH=VALUE (YAML scalar); repeatable."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Accept a model that runs code (model.code, "
                                    "Lambda, TFSMLayer ...), as train --allow-code would."),
    target: named("target", TARGETS) = typer.Option(None, "--target", help="Pre-flight: build the model untrained, "
                                                  "convert it for the target and list every op it cannot run "
                                                  "(imports TensorFlow)."),
    flash_kb: int = typer.Option(None, "--flash-kb", min=1, help="mcu: flash for the model file, KiB "
                                 "(default: export.target.flash_kb)."),
    ram_kb: int = typer.Option(None, "--ram-kb", min=1, help="mcu: RAM for the tensor arena, KiB "
                               "(default: export.target.ram_kb)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check a recipe against the schema (no TensorFlow import), its tune: space too. Exit 0 or 2.

    A model that runs code fails here as it would in train, unless --allow-code.
    With --target, also a pre-flight for the device: exit 10 when the target cannot run it."""
    from dlcli.models.builder import check_code_layers
    from dlcli.recipe.loader import load_recipe

    r = load_recipe(recipe, set_)
    check_code_layers(r.model, allow_code, r._source)
    if r.tune is not None:  # every searched key and value, and the objectives, as dlcli tune checks them
        from dlcli.tune.space import check_space, objective_names

        objective_names(r)
        check_space(recipe, set_, r)
    if target is not None:
        return _preflight(r, plain(target), allow_code, flash_kb, ram_kb, json_out)
    kind = next(k for k in ("architecture", "layers", "graph", "application", "code", "gan") if hasattr(r.model, k))
    detail = getattr(r.model, "architecture", kind)
    if kind == "gan":
        detail = f"gan ({r.model.gan.loss}{', conditional' if r.model.gan.conditional else ''})"
    if json_out:
        emit_json({"recipe": str(recipe), "valid": True, "name": r.name, "task": r.task,
                   "data_source": r.data.source, "model": detail})
    else:
        typer.echo(f"ok: {recipe} is a valid recipe ({r.name}: {r.task}, {r.data.source} data, {detail} model)")


def _preflight(r, target: str, allow_code: bool, flash_kb, ram_kb, json_out: bool) -> None:
    from dlcli.preflight import preflight

    limits = r.export.target
    with native_quiet() as err:
        log = (lambda m: None) if json_out else (lambda m: print(m, file=err, flush=True))
        res = preflight(r, target, allow_code=allow_code, log=log, prepare=quiet_frameworks,
                        flash_kb=flash_kb if flash_kb is not None else limits.flash_kb,
                        ram_kb=ram_kb if ram_kb is not None else limits.ram_kb)
    if json_out:
        emit_json(res.to_json())
    else:
        _print(res)
    res.raise_for_failures()


def _print(res) -> None:
    from rich.table import Table

    console = stdout_console()
    if res.findings:
        what = {"onnx-int8": "ops onnx-int8 runs in float", "gpu": "ops LiteRT's GPU accelerator cannot run"}.get(
            res.target, f"ops {res.target} cannot run as int8 builtins")
        t = Table(title=f"{res.recipe}: {what}", title_justify="left")
        for col in ("op", "why", "recipe key", "layer", "what to change"):
            t.add_column(col)
        for f in res.findings:
            t.add_row(f.op, ", ".join(f.reasons), ", ".join(f.keys) or "model", ", ".join(f.layers) or "-", f.advice)
        console.print(t)
    line = f"{res.target}: model {res.model_bytes / 1024:.1f} KiB"
    probe = res.accelerator or {}
    if probe.get("checked"):
        line += f", LiteRT GPU: {'fully accelerated' if probe['fully_accelerated'] else 'not fully accelerated'}"
    elif probe:
        line += ", op list only (no GPU here)"
    if res.arena:
        line += f", tensor arena {res.arena['recommended_bytes'] / 1024:.0f} KiB (TFLite Micro, measured)"
    console.print(f"{line}; {len(res.ops)} op types; pre-flight {res.seconds:.1f} s"
                  + ("; ok" if res.passed else ""))
