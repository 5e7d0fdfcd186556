"""Settings models whose numbers are numbers: ``true`` is not 1, and ``.inf`` / ``.nan`` are not values.

pydantic's lax mode reads a YAML ``true`` as 1.0 wherever a float is expected (``target: true``
became target 1.0: the whole calibration preference removed, without a word), and lets ``.inf``
and ``.nan`` through every float field (``lambda: .inf`` validated, then failed at quantization).
:class:`PlainNumbers` is the base that refuses both, for the pipeline schema and every plugin's
settings; strict mode would do the first too, but would also refuse what YAML legitimately gives
(a list where a tuple is declared, a string for a path).
"""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

_UNIONS = (typing.Union, types.UnionType)


def _members(tp: Any) -> list[Any]:
    """``tp`` with Optional / Union / Annotated unwrapped into its alternatives."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in _UNIONS:
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _bool_where_number(tp: Any, value: Any) -> bool:
    """Whether ``value`` holds a bool (at any depth of a dict or list) where ``tp`` wants a number and no bool."""
    members = _members(tp)
    if isinstance(value, bool):
        for m in members:
            if m is Any or m is bool or m is object:
                return False
            if typing.get_origin(m) is typing.Literal and value in typing.get_args(m):
                return False
        return any(m in (int, float) for m in members)
    if isinstance(value, dict):
        inner = [typing.get_args(m)[1] for m in members if typing.get_origin(m) is dict and typing.get_args(m)]
        return bool(inner) and any(_bool_where_number(inner[0], v) for v in value.values())
    if isinstance(value, (list, tuple)):
        inner = [typing.get_args(m)[0] for m in members
                 if typing.get_origin(m) in (list, tuple, set, frozenset) and typing.get_args(m)]
        return bool(inner) and any(_bool_where_number(inner[0], v) for v in value)
    return False


class PlainNumbers(BaseModel):
    """Base of a settings model: no bool read as a number, no infinite or NaN float."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_as_number(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                for key in {name, field.alias} - {None}:
                    if key in data and _bool_where_number(field.annotation, data[key]):
                        raise ValueError(f"{key}: {data[key]!r} is true/false, not a number; write the number")
        return data
