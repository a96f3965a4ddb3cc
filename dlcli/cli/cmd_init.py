from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import handle_errors
from dlcli.errors import RunDirError, UsageError


def templates_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "templates"


def template_names() -> list[str]:
    return sorted(p.stem for p in templates_dir().glob("*.yaml"))


@handle_errors
def init(
    template: str = typer.Argument(None, help="Template name (see --list)."),
    path: Path = typer.Argument(None, help="Where to write the recipe (default: TEMPLATE.yaml)."),
    list_: bool = typer.Option(False, "--list", help="List the templates."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Write a starting recipe from a shipped template."""
    from dlcli.atomic import write_text
    from dlcli.recipe.base import closest

    names = template_names()
    if (list_ or template is None) and json_out:
        from dlcli.cli.common import emit_json

        emit_json({"templates": {n: (templates_dir() / f"{n}.yaml").read_text().splitlines()[0].lstrip("# ")
                                 for n in names}})
        return
    if list_ or template is None:
        for name in names:
            first = (templates_dir() / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
            typer.echo(f"{name:14s} {first}")
        return
    if template not in names:
        hint = closest(template, names)
        raise UsageError(f"unknown template {template!r}" + (f", did you mean {hint!r}?" if hint else "")
                         + f" (templates: {', '.join(names)})")
    target = path or Path(f"{template}.yaml")
    if target.exists() and not force:
        raise RunDirError(f"{target}: already exists (pass --force to overwrite)")
    write_text(target, (templates_dir() / f"{template}.yaml").read_text())
    if json_out:
        from dlcli.cli.common import emit_json

        emit_json({"path": str(target), "template": template})
        return
    typer.echo(f"wrote {target} (from template {template}); next: dlcli validate {target}")
