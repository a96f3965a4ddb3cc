"""Load a recipe: safe YAML with positions, ``--set`` overrides, schema validation.

Errors name the file, the line and column, and the dotted key::

    recipes/x.yaml:14:5: train.optimizer.lerning_rate: unknown key, did you mean
    'learning_rate'?
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlcli.errors import RecipeError, UsageError

Path_ = tuple[str | int, ...]


@dataclass
class Source:
    """Where a recipe came from, and where each key of it sits."""

    file: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    overrides: dict[Path_, str] = field(default_factory=dict)  # key path -> where its value came from

    def where(self, path: Path_, value: bool = False) -> str:
        """``file:line:col`` of ``path`` (its value with ``value=True``), else its closest ancestor."""
        for cut in range(len(path), -1, -1):
            sub = tuple(path[:cut])
            if sub in self.overrides:
                return self.overrides[sub]
            table = self.values if value and cut == len(path) and sub in self.values else self.positions
            if sub in table:
                line, col = table[sub]
                return f"{self.file}:{line}:{col}"
        return self.file


def _walk(node: yaml.Node, path: Path_, out: dict[Path_, tuple[int, int]], file: str,
          values: dict[Path_, tuple[int, int]] | None = None) -> None:
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if values is not None:
        values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                raise RecipeError(
                    f"{file}:{line}:{col}: {_dotted(path + (key,))}: duplicate key"
                )
            seen.add(key)
            out[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, path + (key,), out, file, values)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _walk(item, path + (i,), out, file, values)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of YAML; this is a thousand pages
MAX_VALUES = 100_000  # values after alias expansion (a "billion laughs" expands to 10^9)
MAX_DEPTH = 64  # nesting of mappings and lists
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 50x faster


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_bounds(root, where: str, error=RecipeError) -> None:
    """Refuse a YAML node graph that expands (through aliases) to more than ``MAX_VALUES``
    values, nests deeper than ``MAX_DEPTH``, or refers to itself: counted once per node
    (memoized, without recursion), so a bomb is refused without being expanded."""
    memo: dict[int, tuple[int, int]] = {}
    active: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = [memo[id(k)] for k in _children(node)]
            memo[key] = (1 + sum(c for c, _ in kids), 1 + max((d for _, d in kids), default=0))
            active.discard(key)
            at = f"{where}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
            if memo[key][0] > MAX_VALUES:
                raise error(f"{at}: the YAML expands to more than {MAX_VALUES:,} values (aliases repeating aliases?)")
            if memo[key][1] > MAX_DEPTH:
                raise error(f"{at}: the YAML nests deeper than {MAX_DEPTH} levels")
            continue
        if key in memo:
            continue
        active.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in active:
                line = kid.start_mark.line + 1
                raise error(f"{where}:{line}:{kid.start_mark.column + 1}: a YAML alias refers to a value that holds it")
            if id(kid) not in memo:
                stack.append((kid, False))


def compose_bounded(text: str, where: str, error=RecipeError):
    """Safe-load ``text``: its node graph (checked by :func:`check_bounds`) and its data."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_bounds(node, where, error)
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = exc.problem or exc.context or "invalid YAML"
        raise error(f"{at}: YAML syntax error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{where}: YAML error: {' '.join(str(exc).split())}") from exc
    except RecursionError as exc:
        raise error(f"{where}: the YAML nests deeper than {MAX_DEPTH} levels") from exc
    finally:
        loader.dispose()


def parse_yaml(text: str, file: str, values: dict[Path_, tuple[int, int]] | None = None
               ) -> tuple[Any, dict[Path_, tuple[int, int]]]:
    """Safe-load YAML (bounded) and record the line and column of every key and item."""
    node, data = compose_bounded(text, file)
    positions: dict[Path_, tuple[int, int]] = {}
    if node is not None:
        _walk(node, (), positions, file, values)
    return data, positions


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``a.b.0.c=value`` -> (["a", "b", 0, "c"], value). Values are YAML scalars."""
    if "=" not in text:
        raise UsageError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    parts: list[str | int] = []
    for part in key.strip().split("."):
        if not part:
            raise UsageError(f"--set {text!r}: empty key in {key!r}")
        parts.append(int(part) if part.isdigit() else part)
    value = compose_bounded(raw, f"--set {key.strip()}", UsageError)[1] if raw.strip() else None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list, source: Source) -> dict[str, Any]:
    """``overrides``: ``KEY.PATH=VALUE`` texts (--set), or ``(parts, value, where)`` triples
    (values already parsed, e.g. a tune trial's; ``where`` names their origin in errors)."""
    for item in overrides:
        if isinstance(item, str):
            (parts, value), label = parse_override(item), f"--set {item}"
            where = f"{source.file} ({label})"
        else:
            parts, value, where = item
            label = f"{where}: {_dotted(tuple(parts))}"
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(node, list) and isinstance(part, int):
                if part == len(node) == 0:  # a list the override created: the schema judges the key
                    node.append([] if isinstance(nxt, int) else {})
                if part >= len(node):
                    raise UsageError(f"{label}: index {part} is out of range")
                node = node[part]
            elif isinstance(node, dict):
                if part not in node or node[part] is None:
                    node[part] = [] if isinstance(nxt, int) else {}
                    source.overrides[tuple(parts[: i + 1])] = where  # an error about the new key points here
                node = node[part]
            else:
                raise UsageError(f"{label}: {_dotted(tuple(parts[: i + 1]))} is not a mapping")
        last = parts[-1]
        if isinstance(node, list) and isinstance(last, int) and last == len(node) == 0:
            node.append(value)  # a list the override created (a misspelt key): the schema names it
        elif (isinstance(node, list) and isinstance(last, int) and last < len(node)) or isinstance(node, dict):
            node[last] = value
        else:
            raise UsageError(f"{label}: cannot set {_dotted(tuple(parts))}")
        source.overrides[tuple(parts)] = where
    return data


def _clean_loc(loc: tuple[Any, ...], data: Any, error_type: str) -> Path_:
    """Drop the parts pydantic adds for unions (tags, type names) that are not keys."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)):
            out.append(part)
            node = node[part]
        elif last and error_type == "missing" and isinstance(node, dict):
            out.append(part)
        # else: a union tag or type label, not a key the user wrote
    return tuple(out)


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(exc: ValidationError, data: Any, source: Source) -> str:
    errors = exc.errors(include_url=False)
    scored = []
    for err in errors:
        path = _clean_loc(err["loc"], data, err["type"])
        if err["type"] in ("unknown_key", "bool_not_allowed"):
            path = path + (err["ctx"]["key"],)
        scored.append((len(path), path, err))
    # The deepest error is the most specific (a union reports every member).
    scored.sort(key=lambda t: -t[0])
    _, path, err = scored[0]
    msg = err["msg"]
    if err["type"] == "union_tag_invalid":
        key = err["ctx"]["discriminator"].strip("'")
        path = path + (key,)
        expected = [t.strip(" '") for t in err["ctx"]["expected_tags"].split(",")]
        from dlcli.recipe.base import closest

        hint = closest(str(err["ctx"]["tag"]), expected)
        extra = f", did you mean '{hint}'?" if hint else ""
        text = f"unknown value {err['ctx']['tag']!r}{extra} (expected one of: {', '.join(expected)})"
    elif err["type"] == "union_tag_not_found":
        key = err["ctx"]["discriminator"].strip("'")
        path = path + (key,)
        text = "required key is missing"
    elif err["type"] == "unknown_key":
        text = f"unknown key{err['ctx']['hint']} (valid keys here: {err['ctx']['allowed']})"
    elif err["type"] == "missing":
        text = "required key is missing"
    elif err["type"] == "bool_not_allowed":
        text = msg
    else:
        text = msg[0].lower() + msg[1:] if msg else err["type"]
        if err["type"] not in ("value_error", "assertion_error"):
            text += f"; received {_describe(err.get('input'))}"
        text = text.replace("value error, ", "")
    more = f" (and {len(scored) - 1} more)" if len(scored) > 1 else ""
    at_value = err["type"] not in ("unknown_key", "missing", "union_tag_not_found")
    return f"{source.where(path, value=at_value)}: {_dotted(path)}: {text}{more}"


def load_recipe(path: str | Path, overrides: list[str] | None = None):
    """Read, override and validate a recipe file. Raises RecipeError / UsageError."""

    path = Path(path)
    file = str(path)
    if not path.exists():
        raise RecipeError(f"{file}: recipe file not found")
    if path.is_dir():
        raise RecipeError(f"{file}: is a directory, expected a recipe file")
    if not path.is_file():
        raise RecipeError(f"{file}: not a regular file (a device or a pipe?); give a recipe file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise RecipeError(f"{file}: larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short YAML file")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{file}: cannot read: {exc}") from exc
    return recipe_from_text(text, file, overrides, base_dir=path.parent)


def recipe_from_text(text: str, file: str, overrides: list[str] | None = None, base_dir=None):
    from dlcli.recipe.schema import Recipe

    values: dict[Path_, tuple[int, int]] = {}
    data, positions = parse_yaml(text, file, values)
    source = Source(file=file, positions=positions, values=values)
    if data is None:
        raise RecipeError(f"{file}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{file}:1:1: expected a mapping of sections, got {type(data).__name__}")
    if overrides:
        data = apply_overrides(data, list(overrides), source)
    version = data.get("version", 1)
    if version != 1:
        raise RecipeError(
            f"{source.where(('version',))}: version: unsupported recipe version {version!r}; "
            "this dlcli reads version 1"
        )
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": str(base_dir or ".")})
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, data, source)) from exc
    recipe._source = source
    recipe._base_dir = Path(base_dir or ".")
    _absolutize(recipe, Path(base_dir or "."))
    return recipe


def _map_paths(recipe, fix) -> None:
    """Apply ``fix`` to every file path of a recipe (data files, student recipe, weights, a GAN's judge)."""
    data = recipe.data
    for attr in ("path", "validation_path", "test_path", "labels_path"):
        if hasattr(data, attr):
            setattr(data, attr, fix(getattr(data, attr)))
    if recipe.compress.distill is not None and recipe.compress.distill.student:
        recipe.compress.distill.student = fix(recipe.compress.distill.student)
    app = getattr(recipe.model, "application", None)
    if app is not None and app.weights:
        app.weights = fix(app.weights)
    gan = getattr(recipe.model, "gan", None)
    if gan is not None and gan.judge:
        gan.judge = fix(gan.judge)


def _is_placeholder(p: str | None) -> bool:
    return p is None or (p.startswith("<") and p.endswith(">"))


def _absolutize(recipe, base_dir: Path) -> None:
    """Make file paths absolute (relative ones are relative to the recipe file)."""

    def fix(p: str | None) -> str | None:
        if _is_placeholder(p):
            return p
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    _map_paths(recipe, fix)


def recipe_to_yaml(recipe, relative_to: str | Path | None = None) -> str:
    """The resolved recipe (defaults filled in), as YAML. ``relative_to`` (a run directory):
    file paths are written relative to it, so a checkout moved as a whole still resolves them."""
    if relative_to is not None:
        recipe = recipe.model_copy(deep=True)
        base = Path(relative_to).resolve()
        _map_paths(recipe, lambda p: p if _is_placeholder(p) else os.path.relpath(p, base))
    data = recipe.model_dump(mode="json", exclude_none=False)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def recipe_hash(recipe) -> str:
    """What a run trains: every section but ``tracking`` and ``tune`` (where it is logged,
    how it was searched), so changing those never blocks a resume."""
    unset = {"anomaly"} if getattr(recipe, "anomaly", None) is None else set()  # hashes of recipes before it stay
    data = recipe.model_dump(mode="json", exclude={"tracking", "tune", *unset})
    if data.get("compress", {}).get("qat", 0) is None:
        del data["compress"]["qat"]  # as for anomaly: sections added later leave earlier hashes alone
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
