"""The built-in model families, registered through the same hook as a plugin's (the core knows no registry)."""
from __future__ import annotations

from .core.architectures import ARCHITECTURES, ArchSpec
from .hookspecs import hookimpl


@hookimpl
def fairgptq_architectures() -> dict[str, ArchSpec]:
    return dict(ARCHITECTURES)
