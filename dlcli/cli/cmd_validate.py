from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import emit_json, handle_errors


@handle_errors
def validate(
    recipe: Path = typer.Argument(..., help="Recipe file."),
    set_: list[str] = typer.Option([], "--set", help="Override KEY.PATH=VALUE (YAML scalar); repeatable."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Accept a model that runs code (model.code, "
                                    "Lambda, TFSMLayer ...), as train --allow-code would."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check a recipe against the schema (no TensorFlow import). Exit 0 or 2.

    A model that runs code fails here as it would in train, unless --allow-code."""
    from dlcli.models.builder import check_code_layers
    from dlcli.recipe.loader import load_recipe

    r = load_recipe(recipe, set_)
    check_code_layers(r.model, allow_code, r._source)
    kind = next(k for k in ("architecture", "layers", "graph", "application", "code") if hasattr(r.model, k))
    detail = getattr(r.model, "architecture", kind)
    if json_out:
        emit_json({"recipe": str(recipe), "valid": True, "name": r.name, "task": r.task,
                   "data_source": r.data.source, "model": detail})
    else:
        typer.echo(f"ok: {recipe} is a valid recipe ({r.name}: {r.task}, {r.data.source} data, {detail} model)")
