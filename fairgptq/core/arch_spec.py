"""What an architecture entry holds (:class:`ArchSpec`) and the four roles; the table is in architectures.py.

The engine works on weights as (out, in); an entry says how its modules store them
(GPT-2's Conv1D keeps (in, out)), and :meth:`ArchSpec.weight_of` / :meth:`ArchSpec.set_weight`
are the only places that turn one into the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

ROLES = ("attn_qkv", "attn_out", "mlp_in", "mlp_out")


@dataclass(frozen=True)
class ArchSpec:
    """Where things live in one model family (paths relative to the CausalLM / decoder layer)."""

    layers: str
    roles: dict[str, tuple[str, ...]]
    transposed: bool = False  # GPT-2's Conv1D stores weights as (in, out)
    # honours a custom 4D attention mask with explicit position ids (the evaluation's shared-prefix
    # packing); tests/test_evaluation_packing.py checks every entry that claims it
    tree_attention: bool = True
    # a module holding several projections stacked along its output rows, with the slices' names
    # in order (Phi-3: "self_attn.qkv_proj" -> ("q", "k", "v")); the role quantizes it as one matrix
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # modules of a layer holding routed experts as fused 3-D tensors (transformers 5's MoE layout,
    # core/experts.py): every expert's gate_up slice is quantized as mlp_in, its down slice as mlp_out
    experts: tuple[str, ...] = ()

    def role_names(self) -> tuple[str, ...]:
        """The roles this family has: its dense roles, plus mlp_in / mlp_out where routed experts supply them."""
        extra = ("mlp_in", "mlp_out") if self.experts else ()
        return tuple(self.roles) + tuple(r for r in extra if r not in self.roles)

    def modules(self) -> list[tuple[str, str]]:
        """(role, module path in the layer) of every quantized module, in forward order."""
        return [(role, name) for role, names in self.roles.items() for name in names]

    def stored(self, W: torch.Tensor) -> torch.Tensor:
        """An (out, in) weight in the layout this family's modules store (and back: the map is its own inverse)."""
        return W.T if self.transposed else W

    def weight_of(self, module: nn.Module) -> torch.Tensor:
        """The module's weight as (out, in), a view of its data."""
        return self.stored(module.weight.data)

    def set_weight(self, module: nn.Module, W: torch.Tensor) -> None:
        """Write an (out, in) weight into the module, in its own layout and dtype."""
        module.weight.data.copy_(self.stored(W).to(module.weight.dtype))
