"""The built-in model families, registered through the same hook as a plugin's (the core knows no registry)."""
from __future__ import annotations

from .contract import hookimpl
from .core.architectures import ARCHITECTURES, ArchSpec


@hookimpl
def fairgptq_architectures() -> dict[str, ArchSpec]:
    return dict(ARCHITECTURES)
