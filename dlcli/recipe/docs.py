"""Generate the recipe reference (docs/recipes.md) from the schema itself.

Every key, its type, default and meaning come from the pydantic models, so the
reference cannot drift from the code (tests/test_docs.py checks the file is current).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

INTRO_PATH = "recipes_intro.md"


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_type_name(a) for a in args if a is not type(None)]
        s = " or ".join(parts)
        return s + " or null" if type(None) in args else s
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type_name(args[0])} -> {_type_name(args[1])}" if args else "map"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"[{ann.__name__}](#{ann.__name__.lower()})"
    return getattr(ann, "__name__", str(ann))


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(see section)"
        if isinstance(value, BaseModel):
            return "(see section)"
        return f"`{value!r}`" if value not in ([], {}) else f"`{value}`"
    if field.default is PydanticUndefined:
        return ""
    return f"`{field.default!r}`" if field.default is not None else "`null`"


def _models(ann: Any, seen: list[type]) -> None:
    for arg in typing.get_args(ann) or ():
        _models(arg, seen)
    if isinstance(ann, type) and issubclass(ann, BaseModel) and ann not in seen:
        seen.append(ann)
        for f in ann.model_fields.values():
            _models(f.annotation, seen)


def _table(model: type[BaseModel]) -> str:
    lines = [f"### {model.__name__}", ""]
    doc = (model.__doc__ or "").strip()
    if doc and not doc.startswith("!!!") and "Usage docs" not in doc:
        lines += [" ".join(doc.split()), ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        desc = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_name(f.annotation)} | {_default(f)} | {desc} |")
    return "\n".join(lines) + "\n"


def recipe_reference() -> str:
    from pathlib import Path

    from dlcli.models.registry import architectures
    from dlcli.recipe.schema import Recipe

    intro = (Path(__file__).parent / INTRO_PATH).read_text()
    seen: list[type] = []
    _models(Recipe, seen)
    arch = "\n".join(f"- `{a.name}`: {a.summary} ([{a.params.__name__}](#{a.params.__name__.lower()}))"
                     for a in architectures().values())
    body = "\n".join(_table(m) for m in seen)
    return intro.replace("{{ARCHITECTURES}}", arch) + "\n## Every section and key\n\n" + body
