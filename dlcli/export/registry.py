"""Registry of export formats. Importing this never imports TensorFlow.

A format module registers ``export(model, target, plan) -> None`` (writes ``target``)
and ``load(path) -> Runner`` (runs the artifact in its real runtime).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.errors import UsageError
from dlcli.recipe.base import closest


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # "" for a directory
    export: Callable[..., Any]
    load: Callable[..., Any]
    runtime: str


_FORMATS: dict[str, Format] = {}


def register_exporter(name: str, suffix: str, runtime: str):
    def deco(cls_or_module):
        _FORMATS[name] = Format(name, suffix, cls_or_module.export, cls_or_module.load, runtime)
        return cls_or_module

    return deco


def formats() -> dict[str, Format]:
    _load_builtins()
    return dict(_FORMATS)


def get_format(name: str) -> Format:
    _load_builtins()
    if name not in _FORMATS:
        hint = closest(name, list(_FORMATS))
        raise UsageError(f"unknown export format {name!r}" + (f", did you mean {hint!r}?" if hint else "")
                         + f" (known: {', '.join(sorted(_FORMATS))})")
    return _FORMATS[name]


def format_of(path: Path) -> Format:
    """The format of an artifact on disk (by suffix, or a SavedModel directory)."""
    _load_builtins()
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: artifact not found")
    if path.is_dir() and (path / "saved_model.pb").exists():
        return _FORMATS["saved_model"]
    for fmt in _FORMATS.values():
        if fmt.suffix and path.suffix == fmt.suffix:
            return fmt
    raise UsageError(f"{path}: not a known artifact (.tflite, .onnx or a SavedModel directory)")


def _load_builtins() -> None:
    from dlcli.export import onnx, saved_model, tflite  # noqa: F401
