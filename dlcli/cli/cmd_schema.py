from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import handle_errors


@handle_errors
def schema(
    out: Path = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the recipe reference (docs/recipes.md) instead."),
) -> None:
    """Print the recipe JSON Schema (for editor autocompletion)."""
    from dlcli.atomic import write_text

    if markdown:
        from dlcli.recipe.docs import recipe_reference

        text = recipe_reference()
    else:
        from dlcli.recipe.schema import json_schema_text

        text = json_schema_text() + "\n"
    if out:
        write_text(out, text)
        typer.echo(f"wrote {out}", err=True)
    else:
        typer.echo(text, nl=False)
