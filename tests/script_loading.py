"""Loading a script of the checkout (scripts/, benchmarks/) as a module, for tests of its functions.

The scripts are not a package, so tests load them by path; the module is registered in ``sys.modules``
under its file stem because dataclasses resolve their annotations through the module's entry there.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The script at ``relative`` (to the checkout's root, e.g. ``scripts/crows_reach.py``), executed as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
