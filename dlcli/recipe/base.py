"""Base class of every recipe section: unknown keys are errors, with a suggestion."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def closest(word: str, choices: list[str]) -> str | None:
    """The nearest valid name to ``word``, or None when nothing is close."""
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


class StrictModel(BaseModel):
    """A recipe section: typed, documented, and closed to unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False)

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
        return data
