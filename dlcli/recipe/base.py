"""Base class of every recipe section: unknown keys are errors, with a suggestion."""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError


def closest(word: str, choices: list[str]) -> str | None:
    """The nearest valid name to ``word``, or None when nothing is close."""
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


def literal_values(model: type[BaseModel], field: str) -> tuple[str, ...]:
    """The strings ``model.field``'s ``Literal`` allows (``X | None`` unwrapped): the one list
    of choices, which CLI flags and library checks read instead of keeping their own."""
    return _literal(model.model_fields[field].annotation)


def _literal(annotation) -> tuple[str, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(v) for v in typing.get_args(annotation))
    found = [_literal(a) for a in typing.get_args(annotation) if a is not type(None)]
    if len(found) != 1:
        raise TypeError(f"not a Literal: {annotation!r}")
    return found[0]


# bounded sizes: a value outside these is a typo, and would fail (or exhaust memory) later
Width = Annotated[int, Field(ge=1, le=65536)]  # units, filters, a dimension of an example
Pixels = Annotated[int, Field(ge=1, le=16384)]  # image height or width


class StrictModel(BaseModel):
    """A recipe section: typed, documented, and closed to unknown keys."""

    # nan and inf are never meaningful recipe values
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = list(cls.model_fields)
        allowed += [f.alias for f in cls.model_fields.values() if f.alias]
        for key in data:
            if key not in allowed:
                hint = closest(str(key), allowed)
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key{hint}; valid keys here: {allowed}",
                    {
                        "key": str(key),
                        "hint": f", did you mean '{hint}'?" if hint else "",
                        "allowed": ", ".join(sorted(allowed)),
                    },
                )
        for key, value in data.items():  # `epochs: true` is not 1
            field = cls.model_fields.get(key)
            if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
                raise PydanticCustomError("bool_not_allowed", "expected {what}, not {value}", {
                    "key": key, "what": "a number" if _takes_number(field.annotation) else "another value",
                    "value": str(value).lower()})
        return data


def _args(annotation: Any) -> list[Any]:
    """The types a (possibly nested Union / Annotated / Optional) annotation admits."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _args(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [t for a in typing.get_args(annotation) for t in _args(a)]
    return [annotation]


def _takes_bool(annotation: Any) -> bool:
    return any(t is bool or t is Any or t is object for t in _args(annotation))


def _takes_number(annotation: Any) -> bool:
    return any(t in (int, float) for t in _args(annotation))
