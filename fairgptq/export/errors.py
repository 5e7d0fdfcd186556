"""The export's error type, in its own module so every export module can raise it."""
from __future__ import annotations

from ..core.errors import FairGPTQError


class ExportError(FairGPTQError):
    """The quantized model cannot be written in (or read from) the GPTQ checkpoint format."""
