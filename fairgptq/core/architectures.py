"""Per-architecture tables: where the decoder layers are, which linear plays which role, weight layout.

Roles (spec section 3): ``attn_qkv`` (query/key/value, one shared input), ``attn_out``
(attention output projection), ``mlp_in`` (gate/up or fc1, one shared input) and
``mlp_out`` (down projection / fc2).  The table lists roles in forward order, which is
the true-sequential quantization order.

What an entry holds is :class:`~.arch_spec.ArchSpec` (re-exported here).  A built-in family is one entry in :data:`ARCHITECTURES`; a plugin adds one through the
``fairgptq_architectures`` hook (see examples/plugins/phi_architecture.py).  The core knows no
registry: :func:`arch_for` looks a model up in the table it is given (the built-in one by
default); :func:`fairgptq.registry.arch_for` gives it every registered family.  A model type in
no table is mapped from its module names (:mod:`.architecture_inference`), or refused naming
the modules that could not be placed.

Families whose modules carry the same names share one entry (Llama's layout covers Mistral,
Qwen 2/3, Gemma 1-3, OLMo 2, Granite, StableLM and Cohere: per-head q/k norms and extra layer
norms are not linears and stay in float).  Mixture-of-experts entries name the module holding the
routed experts as fused 3-D tensors (``experts``, quantized per expert by :mod:`.experts`); their
router is no role and stays in float.  A fused projection (Phi-3's ``qkv_proj``, GPT-2's
``c_attn``) is one module of its role; ``fused`` says which slices it holds, in output order.
"""
from __future__ import annotations

from typing import Mapping

import torch.nn as nn

from .arch_spec import ROLES, ArchSpec
from .architecture_inference import infer_spec

__all__ = ["ARCHITECTURES", "ROLES", "ArchSpec", "arch_for", "decoder_layers"]

def _roles(qkv: tuple[str, ...], out: str, mlp_in: tuple[str, ...], mlp_out: str | None = None
           ) -> dict[str, tuple[str, ...]]:
    """A family's four roles in forward order (the true-sequential order); no ``mlp_out`` for routed experts."""
    roles = {"attn_qkv": qkv, "attn_out": (out,), "mlp_in": mlp_in}
    return roles if mlp_out is None else {**roles, "mlp_out": (mlp_out,)}


_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_LLAMA = ArchSpec("model.layers", _roles(_QKV, "self_attn.o_proj", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"))
# Gemma 2/3 choose masks (sliding window or full) and rotary tables per layer type: the driver
# captures each type's arguments (driver.capture_first_layer_inputs), but their sliding-window
# layers do not honour the evaluation's packed 4D masks (tests/test_evaluation_packing.py measured
# it), so they are scored unpacked
_LLAMA_NO_PACKING = ArchSpec(layers=_LLAMA.layers, roles=_LLAMA.roles, tree_attention=False)

_ATTENTION = {"attn_qkv": _LLAMA.roles["attn_qkv"], "attn_out": _LLAMA.roles["attn_out"]}
_MOE = ArchSpec(layers="model.layers", roles=_ATTENTION, tree_attention=False, experts=("mlp.experts",))

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA_NO_PACKING,
    "gemma3_text": _LLAMA_NO_PACKING,
    "olmo2": _LLAMA,
    "granite": _LLAMA,
    "stablelm": _LLAMA,
    "cohere": _LLAMA,  # attention and MLP in parallel on one normed input: still this order
    # Phi-3 and Phi-4 (model_type phi3)
    "phi3": ArchSpec("model.layers", _roles(("self_attn.qkv_proj",), "self_attn.o_proj", ("mlp.gate_up_proj",),
                                            "mlp.down_proj"),
                     fused={"self_attn.qkv_proj": ("q", "k", "v"), "mlp.gate_up_proj": ("gate", "up")}),
    "falcon": ArchSpec("transformer.h", _roles(("self_attention.query_key_value",), "self_attention.dense",
                                               ("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),
                       fused={"self_attention.query_key_value": ("q", "k", "v")}),
    "gptj": ArchSpec("transformer.h", _roles(("attn.q_proj", "attn.k_proj", "attn.v_proj"), "attn.out_proj",
                                             ("mlp.fc_in",), "mlp.fc_out")),
    # mixture-of-experts: attention as Llama's, the router (mlp.gate) in float, every routed expert's
    # slices of mlp.experts quantized (core/experts.py); Qwen2-MoE's shared expert is a dense MLP
    "mixtral": _MOE,
    "qwen3_moe": _MOE,
    "olmoe": _MOE,
    "qwen2_moe": ArchSpec("model.layers", _roles(_QKV, "self_attn.o_proj",
                                                 ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj"),
                                                 "mlp.shared_expert.down_proj"),
                          tree_attention=False, experts=("mlp.experts",)),
    "opt": ArchSpec("model.decoder.layers", _roles(_QKV, "self_attn.out_proj", ("fc1",), "fc2")),
    "gpt2": ArchSpec("transformer.h", _roles(("attn.c_attn",), "attn.c_proj", ("mlp.c_fc",), "mlp.c_proj"),
                     transposed=True, fused={"attn.c_attn": ("q", "k", "v")}),
    # per head, q / k / v interleaved: (head, {q, k, v}, head_dim) along the output rows
    "gpt_neox": ArchSpec("gpt_neox.layers", _roles(("attention.query_key_value",), "attention.dense",
                                                   ("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),
                         fused={"attention.query_key_value": ("q", "k", "v")}),
}


def arch_for(model: nn.Module, table: Mapping[str, ArchSpec] | None = None) -> ArchSpec:
    """The entry of ``table`` (default: the built-in :data:`ARCHITECTURES`) for a Hugging Face model.

    A model type in no table is mapped from its module names (:func:`infer_spec`, which logs
    the mapping); one it cannot map is an error naming the modules it could not place, what the
    table supports and how a plugin adds the family.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = ARCHITECTURES if table is None else table
    if model_type in known:
        return known[model_type]
    return infer_spec(model, sorted(known))


def decoder_layers(model: nn.Module, spec: ArchSpec) -> nn.ModuleList:
    return model.get_submodule(spec.layers)
