"""Typer choices from the recipe schema, and usage errors on one line.

A flag that sets a recipe key takes its choices from that key's ``Literal`` in the schema
(``choice(PruneSpec, "schedule")``), so ``--help`` lists them and a new value added to the
schema is accepted by the flag without a second list to keep in step. Click's usage errors
(a bad choice, an unknown option, a missing argument) print one ``error:`` line and exit 2,
like every other dlcli error, instead of Typer's framed usage box.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from enum import Enum

from typer import Exit
from typer._click import exceptions as click_errors  # Typer >= 0.20 vendors click: its errors live here
from typer.core import TyperGroup

from dlcli.recipe.base import literal_values


@functools.cache
def choice(model, field: str) -> type[Enum]:
    """A str Enum of the values ``model.field`` accepts, for a Typer option's type."""
    return named(f"{model.__name__}.{field}", literal_values(model, field))


def named(name: str, options: tuple[str, ...]) -> type[Enum]:
    """A str Enum whose members are ``options`` (a module's own list of targets)."""
    return Enum(name, {v: v for v in options}, type=str)  # type: ignore[return-value]


def plain(value):
    """The string an Enum option carries (``None`` stays ``None``)."""
    return value.value if isinstance(value, Enum) else value


class OneLineErrors(TyperGroup):
    """Usage errors of the program and its commands as one ``error:`` line, exit 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line(info_name or "dlcli"):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _one_line(ctx.command_path):
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line(where: str):
    """Click's UsageError -> one line on stderr and Exit(2); a bare group's help (also a
    UsageError) and everything else go on as they are."""
    try:
        yield
    except click_errors.NoArgsIsHelpError:
        raise
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else where
        message = exc.format_message().replace(": Value error, ", ": ")  # Typer's wording for a bad choice
        print(f"error: {where}: {message} (see: {where} --help)", file=sys.stderr, flush=True)
        raise Exit(exc.exit_code) from exc
