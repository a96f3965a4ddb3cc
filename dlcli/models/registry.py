"""Registry of named architectures. Importing this never imports Keras.

An architecture is a pydantic params model (the recipe's ``model:`` section when
``architecture: NAME``) and a builder ``build(params, ctx) -> keras.Model`` that
imports Keras inside itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlcli.errors import ModelError
from dlcli.recipe.base import closest


@dataclass(frozen=True)
class Architecture:
    name: str
    params: type
    build: Callable[..., Any]
    summary: str


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, params: type, summary: str = ""):
    """Decorator: ``@register_architecture("cnn", CNNParams)`` on a builder function."""

    def deco(fn):
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} registered twice")
        _ARCHITECTURES[name] = Architecture(name, params, fn, summary or (fn.__doc__ or "").strip())
        return fn

    return deco


def get_architecture(name: str) -> Architecture:
    _load_builtins()
    try:
        return _ARCHITECTURES[name]
    except KeyError as exc:
        hint = closest(name, list(_ARCHITECTURES))
        extra = f", did you mean {hint!r}?" if hint else ""
        raise ModelError(
            f"unknown architecture {name!r}{extra} (known: {', '.join(sorted(_ARCHITECTURES))})"
        ) from exc


def architectures() -> dict[str, Architecture]:
    _load_builtins()
    return dict(_ARCHITECTURES)


def _load_builtins() -> None:
    import dlcli.models.architectures  # noqa: F401  (registers the built-ins)
