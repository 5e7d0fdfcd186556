"""Per-architecture tables: where the decoder layers are, which linear plays which role, weight layout.

Roles (spec section 3): ``attn_qkv`` (query/key/value, one shared input), ``attn_out``
(attention output projection), ``mlp_in`` (gate/up or fc1, one shared input) and
``mlp_out`` (down projection / fc2).  The table lists roles in forward order, which is
the true-sequential quantization order.

The engine works on weights as (out, in); an entry says how its modules store them
(GPT-2's Conv1D keeps (in, out)), and :meth:`ArchSpec.weight_of` / :meth:`ArchSpec.set_weight`
are the only places that turn one into the other.

A built-in family is one entry in :data:`ARCHITECTURES`; a plugin adds one through the
``fairgptq_architectures`` hook (see examples/plugins/phi_architecture.py).  The core knows no
registry: :func:`arch_for` looks a model up in the table it is given (the built-in one by
default); :func:`fairgptq.registry.arch_for` gives it every registered family.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Mapping

import torch
import torch.nn as nn

from .errors import UnsupportedArchitectureError

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

    def stored(self, W: torch.Tensor) -> torch.Tensor:
        """An (out, in) weight in the layout this family's modules store (and back: the map is its own inverse)."""
        return W.T if self.transposed else W

    def weight_of(self, module: nn.Module) -> torch.Tensor:
        """The module's weight as (out, in), a view of its data."""
        return self.stored(module.weight.data)

    def set_weight(self, module: nn.Module, W: torch.Tensor) -> None:
        """Write an (out, in) weight into the module, in its own layout and dtype."""
        module.weight.data.copy_(self.stored(W).to(module.weight.dtype))


_LLAMA = ArchSpec(
    layers="model.layers",
    roles={
        "attn_qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "attn_out": ("self_attn.o_proj",),
        "mlp_in": ("mlp.gate_proj", "mlp.up_proj"),
        "mlp_out": ("mlp.down_proj",),
    },
)

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "opt": ArchSpec(
        layers="model.decoder.layers",
        roles={
            "attn_qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            "attn_out": ("self_attn.out_proj",),
            "mlp_in": ("fc1",),
            "mlp_out": ("fc2",),
        },
    ),
    "gpt2": ArchSpec(
        layers="transformer.h",
        roles={
            "attn_qkv": ("attn.c_attn",),
            "attn_out": ("attn.c_proj",),
            "mlp_in": ("mlp.c_fc",),
            "mlp_out": ("mlp.c_proj",),
        },
        transposed=True,
    ),
    "gpt_neox": ArchSpec(
        layers="gpt_neox.layers",
        roles={
            "attn_qkv": ("attention.query_key_value",),
            "attn_out": ("attention.dense",),
            "mlp_in": ("mlp.dense_h_to_4h",),
            "mlp_out": ("mlp.dense_4h_to_h",),
        },
    ),
}


def arch_for(model: nn.Module, table: Mapping[str, ArchSpec] | None = None) -> ArchSpec:
    """The entry of ``table`` (default: the built-in :data:`ARCHITECTURES`) for a Hugging Face model.

    An unknown family is an error listing what the table supports and how a plugin adds one.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = ARCHITECTURES if table is None else table
    if model_type not in known:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported: {', '.join(sorted(known))}. "
            f"Add it as an ArchSpec returned by a plugin's fairgptq_architectures hook "
            f"(example: examples/plugins/phi_architecture.py).")
    return known[model_type]


def decoder_layers(model: nn.Module, spec: ArchSpec) -> nn.ModuleList:
    return model.get_submodule(spec.layers)
