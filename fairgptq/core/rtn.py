"""Round-to-nearest over a whole model: the baseline every GPTQ claim is measured against."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from .architectures import ArchSpec, arch_for, decoder_layers
from .experts import check_expert_layers, expert_slices
from .quantizer import QuantConfig, round_to_nearest


@torch.no_grad()
def rtn_quantize_model(model: nn.Module, config: QuantConfig,
                       architectures: Mapping[str, ArchSpec] | None = None) -> int:
    """Replace every role linear's weight by its RTN value on GPTQ's grid and groups; returns the count.

    ``architectures``: the family table (default: the built-in one; a registry's includes plugins').
    """
    spec = arch_for(model, architectures)
    check_expert_layers(decoder_layers(model, spec), spec)
    n = 0
    for layer in decoder_layers(model, spec):
        for names in spec.roles.values():
            for name in names:
                mod = layer.get_submodule(name)
                spec.set_weight(mod, round_to_nearest(spec.weight_of(mod), config))
                n += 1
        for _, W in expert_slices(layer, spec):  # a routed expert's (out, in) slice of its fused tensor
            W.copy_(round_to_nearest(W, config).to(W.dtype))
            n += 1
    return n
