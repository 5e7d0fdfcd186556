"""A plugin's settings as one pydantic model, so a setting has one shape and one check.

The pipeline schema validates an entry's ``params`` with it (errors carry the YAML path,
``objectives[0].params.alpha``), ``fairgptq plugins`` prints it, and a plugin that declares
one validates its own keyword arguments with it, so the library API and the YAML file
share the check.  A plugin declares the model as a ``Params`` attribute of its factory
(fairgptq's own objectives do); for any other factory the model is read off its
signature (names, type hints, defaults), so a third-party plugin needs to write nothing.
"""
from __future__ import annotations

import inspect
import typing
from functools import lru_cache
from typing import Any, Collection

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..core.errors import ConfigError

# what a run passes a plugin itself, by kind; every other argument the factory takes is a user setting
SUPPLIED: dict[str, tuple[str, ...]] = {"objectives": ("pairs", "pair_set", "batch_size", "max_length")}


def params_model(factory: Any, supplied: Collection[str] = ()) -> type[BaseModel]:
    """The settings model of ``factory``: its own ``Params``, or one generated from its signature.

    ``supplied`` names the arguments the run passes itself (an objective's pairs, batch size, ...):
    they are not settings a user writes.
    """
    own = getattr(factory, "Params", None)
    if isinstance(own, type) and issubclass(own, BaseModel):
        return own
    return _signature_model(factory, frozenset(supplied))


@lru_cache(maxsize=None)
def _signature_model(factory: Any, supplied: frozenset[str]) -> type[BaseModel]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check its keywords against
        return create_model("AnyParams", __config__=ConfigDict(extra="allow"))
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # a hint that does not resolve (a name only imported for type checking) is not checked
        hints = {}
    fields: dict[str, Any] = {}
    extra = "forbid"
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            extra = "allow"
        elif p.kind is not p.VAR_POSITIONAL and p.name not in supplied and p.name != "self":
            fields[p.name] = (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
    name = getattr(factory, "__name__", type(factory).__name__)
    return create_model(f"{name}Params", __config__=ConfigDict(extra=extra, arbitrary_types_allowed=True),
                        **fields)


def unknown_settings(model: type[BaseModel], params: dict[str, Any], supplied: Collection[str] = ()) -> list[str]:
    """Keys of ``params`` the model has no field for (none when it takes any keyword)."""
    if model.model_config.get("extra") == "allow":
        return []
    names = set(setting_names(model))
    return [k for k in params if k not in names and k not in model.model_fields and k not in supplied]


def setting_names(model: type[BaseModel]) -> list[str]:
    """The settings a user writes: each field's alias where it has one (``lambda`` for ``lambda_``)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def validated(model: type[BaseModel], values: dict[str, Any], owner: str) -> BaseModel:
    """``model`` built from keyword arguments given in Python: a bad value is a ConfigError naming it."""
    try:
        return model(**values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'params'}: {_message(err)}"
                             for err in e.errors())
        raise ConfigError(f"{owner}: {problems}") from None


def _message(err: dict) -> str:
    error = (err.get("ctx") or {}).get("error")
    return str(error) if err["type"] == "value_error" and error is not None else err["msg"]


def describe_params(model: type[BaseModel]) -> list[str]:
    """``name=default`` per setting (a required one by its name), for ``fairgptq plugins``."""
    out = [name if field.is_required() else f"{name}={field.get_default(call_default_factory=True)!r}"
           for name, field in model.model_fields.items()]
    return out + (["**kwargs"] if model.model_config.get("extra") == "allow" else [])
