"""What the pipeline asks an objective's settings model, instead of reading its setting names.

Whether a point is plain GPTQ, what its plain twin is, which roles it targets and whether its
pair set also builds H are answers of the objective's own ``Params`` model
(:class:`fairgptq.core.objective.ObjectiveParams`), so an outside objective whose strength is
not called ``alpha`` takes part in plain baselines, seed reports and sweep references exactly
as the built-in ones do.
"""
from __future__ import annotations

from typing import Any, Iterable

from ..core.errors import FairGPTQError
from ..core.objective import ObjectiveParams
from ..contract.params import SUPPLIED, params_model
from ..registry import Registry, scoped_registry


def settings_of(registry: Registry, name: str, params: dict[str, Any]) -> ObjectiveParams | None:
    """The objective's validated settings model, or None when it declares none derived from ObjectiveParams."""
    try:
        factory = registry.get("objectives", name).factory
    except FairGPTQError:
        return None
    model = params_model(factory, SUPPLIED["objectives"])
    if not (isinstance(model, type) and issubclass(model, ObjectiveParams)):
        return None
    return model.model_validate(params)


def without_term(registry: Registry, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of the plain twin: the objective's own answer, written as the pipeline writes params."""
    settings = settings_of(registry, name, params)
    if settings is None:
        raise FairGPTQError(f"objective {name!r} declares no settings model that can switch its term off, so a "
                            f"plain-GPTQ reference cannot be derived from it; give it a Params model derived from "
                            f"fairgptq.core.objective.ObjectiveParams (is_off / without_term)")
    return settings.without_term().dump()


def entries_are_off(registry: Registry, entries: Iterable[tuple[str, dict[str, Any]]]) -> bool:
    """True when no objective of (name, params) entries adds a term: plain GPTQ on the same calibration.

    An objective that cannot say (no ObjectiveParams model) counts as adding its term.
    """
    for name, params in entries:
        settings = settings_of(registry, name, params)
        if settings is None or not settings.is_off():
            return False
    return True


def config_is_plain(config: dict, registry: Registry | None = None) -> bool:
    """Whether a saved run config (``config.yaml`` / ``results.json["config"]``) is plain GPTQ."""
    registry = registry or registry_for(config.get("plugins", ()))
    return entries_are_off(registry, ((o.get("name", "fair_pairs"), o.get("params") or {})
                                      for o in config.get("objectives", [])))


def targeted_roles(registry: Registry, entries: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every role some objective targets (sorted), as each objective's settings say."""
    roles: set[str] = set()
    for name, params in entries:
        settings = settings_of(registry, name, params)
        roles |= set((settings.targeted_roles() if settings is not None else None) or ())
    return sorted(roles)


def builds_hessian(registry: Registry, name: str, params: dict[str, Any]) -> bool:
    """Whether this objective's own sentences also build H (its answer; False when it cannot say)."""
    settings = settings_of(registry, name, params)
    return settings is not None and settings.builds_hessian()


def needs_gradients(registry: Registry, name: str, params: dict[str, Any]) -> bool:
    """Whether this objective asks for score gradients (its answer; False when it cannot say)."""
    settings = settings_of(registry, name, params)
    return settings is not None and settings.needs_gradients()


def holds_pair_activations(registry: Registry, name: str, params: dict[str, Any]) -> bool:
    """Whether this objective's pairs are held layer by layer (its answer; True, the costly case, when it cannot say)."""
    settings = settings_of(registry, name, params)
    return settings is None or settings.holds_pair_activations()


def registry_for(plugins: Iterable[str]) -> Registry:
    """A registry with a saved config's plugin modules registered (they name its objectives): the one in use
    inside a scoped block, else a fresh one, never the process-wide one (``report --rewrite`` runs unscoped)."""
    registry = scoped_registry() or Registry()
    for module in plugins:
        try:
            registry.register_module(module)
        except FairGPTQError:
            pass  # a module that no longer imports: its objectives count as adding a term
    return registry
