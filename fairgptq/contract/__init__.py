"""The plugin contract: the one module a plugin imports (``from fairgptq.contract import ...``).

A plugin of any kind (pair source, objective, backend, architecture, evaluation task) needs the
names below and nothing else of the package's insides; the built-in plugins are written
against the same names (``tests/test_code_structure.py`` holds them to it), so an outside
plugin can do everything a built-in does.  ``fairgptq.core`` (the maths) may be imported too.
docs/plugins.md shows a minimal plugin of each kind.
"""
from ..core.architectures import ROLES, ArchSpec
from ..core.backend import Backend
from ..core.errors import ConfigError, DataError, FairGPTQError, PluginError
from ..core.gptq import FactoredHessian, apply_damped, apply_inverse
from ..core.objective import (Captured, FairSettings, LinearTerm, Objective, ObjectiveParams, ProbeReading,
                              ScoreGradient, ScoreRequest, StepProbe, TokenBatch)
from ..core.sequences import Request, common_prefix_length, encode_request
from .hooks import hookimpl
from .kinds import ItemKind
from .pairs import PARALLEL_KEY, Pair, pairs_hash, split_key
from .params import validated
from .targets import (DEFAULT_ROLES, Alpha, PairObjective, TargetedObjective, TargetParams, TargetSelection,
                      select_layers)
from .tasks import EvaluationTask, NoOptions, TaskContext, TaskOptions
from .tokens import identical_pairs_advice, pad_id, right_padded, text_batches

__all__ = [
    # registering
    "hookimpl", "validated", "ConfigError", "DataError", "FairGPTQError", "PluginError",
    # pair sources
    "Pair", "PARALLEL_KEY", "pairs_hash", "split_key",
    # objectives: bases, settings, the driver's token / term types, the solve helpers
    "Objective", "ObjectiveParams", "TargetedObjective", "PairObjective", "TargetParams", "TargetSelection",
    "Alpha", "DEFAULT_ROLES", "ROLES", "select_layers", "TokenBatch", "Captured", "FairSettings", "LinearTerm",
    "ScoreRequest", "ScoreGradient", "StepProbe", "ProbeReading", "FactoredHessian", "apply_damped", "apply_inverse", "text_batches",
    "right_padded", "pad_id", "identical_pairs_advice", "Request", "encode_request", "common_prefix_length",
    # backends and architectures
    "Backend", "ArchSpec",
    # evaluation tasks
    "EvaluationTask", "TaskContext", "TaskOptions", "NoOptions", "ItemKind",
]
