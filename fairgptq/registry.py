"""The plugin registry: one pluggy manager holding built-ins, entry points and named modules."""
from __future__ import annotations

import importlib
import inspect
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Sequence

import pluggy

from .contract import hooks
from .core import architectures as core_architectures
from .core.architectures import ArchSpec
from .core.errors import FairGPTQError, PluginError

KINDS = {"pair_sources": "fairgptq_pair_sources", "objectives": "fairgptq_objectives", "backends": "fairgptq_backends",
         "architectures": "fairgptq_architectures", "evaluation_tasks": "fairgptq_evaluation_tasks"}
ENTRY_POINT_GROUPS = tuple(f"fairgptq.{kind}" for kind in KINDS)
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
BUILTIN_MODULES = ("fairgptq.datasets_adapters.plugin", "fairgptq.objectives.plugin", "fairgptq.backends.plugin",
                   "fairgptq.architectures_plugin", "fairgptq.evaluation.plugin")


@dataclass(frozen=True)
class PluginInfo:
    """One registered name: its kind, factory, where it came from and its parameters."""

    kind: str
    name: str
    factory: Any
    origin: str

    def parameters(self) -> list[str]:
        """The settings a pipeline may give it under ``params``, from the plugin's settings model."""
        from .contract.params import SUPPLIED, describe_params, params_model
        if self.kind == "evaluation_tasks":  # not a factory: an EvaluationTask lists its options model's fields
            return self.factory.parameters()
        if self.kind == "architectures":  # a table entry, not a factory: nothing to set
            return []
        return describe_params(params_model(self.factory, SUPPLIED.get(self.kind, ())))


class Registry:
    """Collects every plugin's names; lookups name the available choices when they fail."""

    def __init__(self, *, entry_points: bool = True) -> None:
        self._infos: list[PluginInfo] | None = None  # every hook's answer, asked once per set of plugins
        self.pm = pluggy.PluginManager(hooks.PROJECT)
        self.pm.add_hookspecs(hooks)
        for mod in BUILTIN_MODULES:
            self.pm.register(importlib.import_module(mod), name=mod)
        if entry_points:
            for group in ENTRY_POINT_GROUPS:
                self.pm.load_setuptools_entrypoints(group)
        self._check()

    def register_module(self, dotted: str) -> None:
        """Import a module by name and register it (a pipeline's ``plugins:`` list)."""
        if not isinstance(dotted, str) or not _MODULE_NAME.fullmatch(dotted):
            raise PluginError(f"plugin module {dotted!r} is not a Python module name (letters, digits, '_' "
                              f"and dots, e.g. my_plugins.pairs); give the module, not a file path")
        if self.pm.has_plugin(dotted):
            return
        try:
            mod = importlib.import_module(dotted)
        except ImportError as e:
            raise PluginError(f"plugin module {dotted!r} could not be imported ({e}); check the name and that "
                              f"it is on PYTHONPATH or installed") from e
        except Exception as e:  # a SyntaxError or any error the module raises while importing
            raise PluginError(f"plugin module {dotted!r} failed while importing: {type(e).__name__}: {e}") from e
        if not any(callable(getattr(mod, hook, None)) for hook in KINDS.values()):
            raise PluginError(f"plugin module {dotted!r} registers nothing: it defines none of the hooks "
                              f"{', '.join(KINDS.values())} (marked @hookimpl); is it the right module?")
        self.register(mod, name=dotted)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object; one that breaks the contract is removed again before the error."""
        self.pm.register(plugin, name=name)
        self._infos = None
        try:
            self._check()
        except PluginError:
            self.pm.unregister(plugin)
            self._infos = None
            raise

    def unregister(self, name: str) -> None:
        """Remove a registered plugin by name (what a test that borrowed a registry gives back)."""
        self.pm.unregister(name=name)
        self._infos = None

    def _check(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginError(f"a plugin implements a hook fairgptq does not define: {e}. "
                              f"Valid hooks: {', '.join(KINDS.values())}") from e
        self.all()  # duplicate names fail now, not at first use

    def all(self) -> list[PluginInfo]:
        """Every plugin's names and factories; the hooks run once, again only after :meth:`register`."""
        if self._infos is None:
            self._infos = self._collect()
        return list(self._infos)

    def _collect(self) -> list[PluginInfo]:
        infos: list[PluginInfo] = []
        seen: dict[tuple[str, str], str] = {}
        for kind, hook in KINDS.items():
            caller = getattr(self.pm.hook, hook)
            for impl in caller.get_hookimpls():
                origin = self._origin(impl.plugin_name)
                for name, factory in self._declared(impl, kind).items():
                    if kind == "architectures" and not isinstance(factory, ArchSpec):
                        raise PluginError(f"plugin {impl.plugin_name}: architecture {name!r} must be an ArchSpec "
                                          f"(fairgptq.core.architectures), got {type(factory).__name__}")
                    if (kind, name) in seen:
                        raise PluginError(f"{kind[:-1]} name {name!r} is registered twice: by {seen[(kind, name)]} "
                                          f"and by {origin}; rename one of them")
                    seen[(kind, name)] = origin
                    infos.append(PluginInfo(kind, name, factory, origin))
        return infos

    def _declared(self, impl: Any, kind: str) -> dict[str, Any]:
        """What one hook implementation returns: a mapping name -> factory, or a clear error naming the plugin."""
        try:
            declared = impl.function() or {}
        except Exception as e:
            raise PluginError(f"plugin {impl.plugin_name}: its {KINDS[kind]} hook failed: {type(e).__name__}: "
                              f"{e}") from e
        if not isinstance(declared, dict) or not all(isinstance(n, str) and n for n in declared):
            raise PluginError(f"plugin {impl.plugin_name}: its {KINDS[kind]} hook must return a dict mapping "
                              f"names to factories, got {type(declared).__name__}")
        return declared

    def _origin(self, plugin_name: str) -> str:
        for plugin, dist in self.pm.list_plugin_distinfo():
            if self.pm.get_name(plugin) == plugin_name:
                return f"{dist.project_name} {dist.version} (entry point)"
        return "built-in" if plugin_name in BUILTIN_MODULES else f"module {plugin_name}"

    def architectures(self) -> dict[str, Any]:
        """Model families by ``config.model_type`` (ArchSpec entries, built-in and from plugins)."""
        return {i.name: i.factory for i in self.all() if i.kind == "architectures"}

    def names(self, kind: str) -> list[str]:
        return sorted(i.name for i in self.all() if i.kind == kind)

    def get(self, kind: str, name: str) -> PluginInfo:
        if kind not in KINDS:
            raise PluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
        for info in self.all():
            if info.kind == kind and info.name == name:
                return info
        raise PluginError(f"unknown {kind[:-1].replace('_', ' ')} {name!r}; available: "
                          f"{', '.join(self.names(kind)) or 'none'}")

    def create(self, kind: str, name: str, /, **params: Any) -> Any:
        """Call the factory; a wrong parameter gets a message listing the valid ones.

        ``kind`` and ``name`` are positional-only, so a plugin parameter may be called either
        (StereoSet's ``kind: intrasentence``).  A factory without type hints that fails on a value
        of the wrong type or shape (TypeError, ValueError, KeyError, AttributeError) is reported as
        a PluginError naming the plugin and the params.
        """
        from .contract.params import SUPPLIED, params_model, unknown_settings
        info = self.get(kind, name)
        label = f"{kind[:-1].replace('_', ' ')} {name!r}"
        try:
            inspect.signature(info.factory).bind(**params)
        except TypeError as e:
            raise PluginError(f"{label}: {e}; parameters: {', '.join(info.parameters()) or 'none'}") from e
        except ValueError:
            pass
        if kind != "architectures":  # settings that reach a factory's **settings are checked by its model
            supplied = SUPPLIED.get(kind, ())
            unknown = unknown_settings(params_model(info.factory, supplied), params, supplied)
            if unknown:
                raise PluginError(f"{label}: unknown parameter(s) {unknown}; parameters: "
                                  f"{', '.join(info.parameters()) or 'none'}")
        try:
            made = info.factory(**params)
        except FairGPTQError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise PluginError(f"{label} cannot use its params {params!r}: {type(e).__name__}: {e}") from e
        _check_made(kind, label, info.origin, made)
        return made


def _check_made(kind: str, label: str, origin: str, made: Any) -> None:
    """A factory that returns the wrong kind of object is named now, not as an AttributeError deep in a run."""
    from .core.backend import Backend
    from .core.objective import Objective
    from .contract.pairs import Pair
    expected = {"backends": (Backend, "a fairgptq Backend (fairgptq.core.backend)"),
                "objectives": (Objective, "a fairgptq Objective (fairgptq.core.objective)")}
    if kind in expected and not isinstance(made, expected[kind][0]):
        raise PluginError(f"{label} ({origin}): its factory returned {type(made).__name__}, not {expected[kind][1]}")
    if kind == "pair_sources" and (isinstance(made, (str, bytes)) or not isinstance(made, Sequence)
                                   or not all(isinstance(p, Pair) for p in made)):
        raise PluginError(f"{label} ({origin}): its factory returned {type(made).__name__}, not a list of Pair "
                          f"(fairgptq.contract.pairs.Pair)")


_SCOPED: ContextVar[Registry | None] = ContextVar("fairgptq_registry", default=None)


def default_registry() -> Registry:
    """The registry in use: a pipeline's own while it is validated or run (:func:`scoped`), else the process-wide one.

    A pipeline's ``plugins:`` are registered in its own registry (:func:`pipeline_registry`), which is
    in use only inside ``scoped``: loading or running one pipeline never registers anything for the
    next one, or for the process.
    """
    return _SCOPED.get() or _process_registry()


@lru_cache(maxsize=1)
def _process_registry() -> Registry:
    """The process-wide registry (built-ins plus installed entry points), built on first use."""
    return Registry()


def scoped_registry() -> Registry | None:
    """The registry a :func:`scoped` block put in use, None outside any."""
    return _SCOPED.get()


@contextmanager
def scoped(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the one every lookup uses inside the block (and only there)."""
    token = _SCOPED.set(registry)
    try:
        yield registry
    finally:
        _SCOPED.reset(token)


def pipeline_registry(plugins: Sequence[str] = ()) -> Registry:
    """A fresh registry (built-ins, entry points) with a pipeline's plugin modules; a module that fails is left
    for the pipeline's checks to report at ``plugins[i]``."""
    registry = Registry()
    for module in plugins:
        try:
            registry.register_module(module)
        except FairGPTQError:
            pass
    return registry


def registry_with(plugins: Sequence[str]) -> Registry:
    """The registry in use inside a :func:`scoped` block with ``plugins`` registered, else a fresh one with them.

    What a run, a preflight or a rewrite of a saved run calls: never the process-wide registry, so a
    pipeline's plugins are seen by that pipeline alone.  A module that fails raises (PluginError).
    """
    registry = _SCOPED.get()
    if registry is None:
        registry = Registry()
    for module in plugins:
        registry.register_module(module)
    return registry


def architectures() -> dict[str, ArchSpec]:
    """Every family by ``config.model_type`` in the process-wide registry: built-in and from plugins."""
    return default_registry().architectures()


def arch_for(model, registry: Registry | None = None) -> ArchSpec:
    """The registered family of a Hugging Face model (built-in or a plugin's), or an error naming the fix."""
    return core_architectures.arch_for(model, (registry or default_registry()).architectures())
