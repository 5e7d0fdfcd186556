"""Export to the standard GPTQ checkpoint format and loading it back for evaluation."""
from .gptq_format import (ExportError, at_checkpoint_precision, choose_format, export_checkpoint, pack_weight,
                          snap_to_checkpoint_precision, unpack_weight)
from .model_card import fairgptq_record
from .loader import is_gptq_checkpoint, load_gptq_checkpoint, read_quantize_config

__all__ = ["ExportError", "at_checkpoint_precision", "choose_format", "export_checkpoint", "fairgptq_record",
           "is_gptq_checkpoint", "load_gptq_checkpoint", "pack_weight", "read_quantize_config",
           "snap_to_checkpoint_precision", "unpack_weight"]
