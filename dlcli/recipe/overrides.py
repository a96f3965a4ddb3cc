"""CLI flags and library arguments as overrides of a recipe section: the section (a
pydantic spec) is the one options object of a command; ``apply_overrides`` lays the
given values over it and validates the result with the section's own schema, so a
flag's bounds and choices are written once, in the schema."""

from __future__ import annotations

from typing import Any


def apply_overrides(spec, given: dict[str, Any], flags: dict[str, str] | None = None):
    """``spec`` with the non-None values of ``given`` on top, validated; a bad value is a
    :class:`~dlcli.errors.UsageError` naming its flag (``--key-name`` unless ``flags`` says)."""
    from pydantic import ValidationError

    from dlcli.errors import UsageError

    update = {k: v for k, v in given.items() if v is not None}
    try:
        return type(spec).model_validate({**spec.model_dump(), **update})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        flag = (flags or {}).get(key, "--" + key.replace("_", "-"))
        field = type(spec).model_fields.get(key)
        bounds = _bounds(field) if field is not None else ""
        expected = f"expected a value in {bounds}" if bounds else err["msg"][0].lower() + err["msg"][1:]
        value = update.get(key, "")
        shown = repr(value) if isinstance(value, str) else value
        raise UsageError(f"{flag} {shown}: {expected}") from exc


def _bounds(field) -> str:
    """A numeric field's interval as text ("[0, 1)"), from its pydantic constraints."""
    lo, hi = ("(", "-inf"), ("inf", ")")
    for m in field.metadata:
        for attr, side in (("ge", "["), ("gt", "("), ("le", "]"), ("lt", ")")):
            value = getattr(m, attr, None)
            if value is not None:
                if attr in ("ge", "gt"):
                    lo = (side, f"{value:g}")
                else:
                    hi = (f"{value:g}", side)
    return "" if lo[1] == "-inf" and hi[0] == "inf" else f"{lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
