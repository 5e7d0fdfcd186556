"""pydantic errors rewritten as one line per problem: ``objectives[0].params.alpha: must be >= 0 (got -1)``."""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from ..core.errors import ConfigError
from . import keypath

Problem = tuple[str, str]  # (YAML path, what is wrong)


class PipelineError(ConfigError):
    """A pipeline file with problems; the message lists each as ``path: what is wrong``."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source, self.problems = source, problems
        lines = [f"{path}: {msg}" for path, msg in problems]
        if len(lines) == 1:  # one problem, one line
            super().__init__(f"{source}: {lines[0]}")
        else:
            super().__init__(f"{source}: {len(lines)} problems\n  " + "\n  ".join(lines))

_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}


def _unwrap(tp: Any) -> Any:
    """Strip Annotated / Optional down to the interesting type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def _type_at(root: type[BaseModel], loc: tuple) -> Any:
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    return _unwrap(tp)


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    tp = _type_at(root, loc)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _text(err: dict, root: type[BaseModel]) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, tuple(err["loc"][:-1]))
        return "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required key is missing"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {got!r})"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "must be > 0", not "> 0.0"
        return f"must be {op} {bound} (got {got!r})"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]} (got {got!r})"
    if kind == "too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')} (letters, digits, '.', '_' and '-') (got {got!r})"
    return err["msg"]


def problems_from(error: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """(path, message) per error, one per path (union branches collapse to the first)."""
    out: dict[str, str] = {}
    for err in error.errors():
        path = keypath.render([p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in (
            "int", "float", "str", "bool", "list", "dict")))])
        out.setdefault(path, _text(err, root))
    return list(out.items())
