"""The generic fallback: an :class:`ArchSpec` inferred from module names, for a model type in no table.

Most decoder-only models name their projections after one of a handful of conventions
(``q_proj`` / ``query`` / ``Wqkv``, ``o_proj`` / ``dense``, ``gate_proj`` / ``fc1``, ``down_proj`` /
``fc2``), so a family nobody wrote an entry for can usually be quantized anyway.  The inference
is deliberately strict: every linear of a decoder layer must land in exactly one role, and a
layer holding a weight that is not a linear (a custom projection class) is refused, naming those
modules, because quantizing part of a layer while calling it done would be wrong silently.  transformers 5's fused-experts modules (3-D ``gate_up_proj`` and
``down_proj``, see experts.py) are recognised as routed experts, and the router beside them (one
row per expert) stays in float.  The mapping is logged, so a user sees what was assumed.

Roles come out in the canonical order (attn_qkv, attn_out, mlp_in, mlp_out), which is the forward
order of every pre-norm and parallel decoder block; within attn_qkv, q before k before v and
within mlp_in, gate before up, the order their forwards call them.
"""
from __future__ import annotations

import logging
import re

import torch.nn as nn

from .arch_spec import ROLES, ArchSpec
from .errors import UnsupportedArchitectureError
from .experts import is_fused_experts

log = logging.getLogger(__name__)

_ATTN_CONTEXT = re.compile(r"attn|attention")
_MLP_CONTEXT = re.compile(r"mlp|ffn|feed_?forward|intermediate")
# last path component (lower case) -> role, by where it sits
_QKV = {"q_proj": 0, "query": 0, "wq": 0, "q": 0, "k_proj": 1, "key": 1, "wk": 1, "k": 1,
        "v_proj": 2, "value": 2, "wv": 2, "v": 2,
        "qkv_proj": 0, "query_key_value": 0, "c_attn": 0, "wqkv": 0, "qkv": 0, "in_proj": 0}
_ATTN_OUT = {"o_proj", "out_proj", "dense", "c_proj", "wo", "o", "out"}
_MLP_IN = {"gate_proj": 0, "w1": 0, "gate": 0, "wi_0": 0, "up_proj": 1, "w3": 1, "up": 1, "wi_1": 1,
           "gate_up_proj": 0, "fc1": 0, "fc_in": 0, "c_fc": 0, "dense_h_to_4h": 0, "wi": 0}
_MLP_OUT = {"down_proj", "fc2", "fc_out", "c_proj", "dense_4h_to_h", "w2", "wo", "down"}
_FUSED = {"qkv_proj": ("q", "k", "v"), "query_key_value": ("q", "k", "v"), "c_attn": ("q", "k", "v"),
          "wqkv": ("q", "k", "v"), "qkv": ("q", "k", "v"), "in_proj": ("q", "k", "v"),
          "gate_up_proj": ("gate", "up")}
_logged: set[tuple[str, str]] = set()


def is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` (or subclass, e.g. Falcon's) or GPT-2's ``Conv1D`` (weight stored (in, out))."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def find_decoder_layers(model: nn.Module) -> str | None:
    """Path of the decoder layer list: a ModuleList of ``num_hidden_layers`` blocks holding linears.

    Where the config gives no layer count (or none matches), the longest such list; the shortest
    path wins a tie (a multimodal model's text stack over a deeper vision tower of the same length
    is still ambiguous, and a spec plugin settles it).
    """
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    want = getattr(text, "num_hidden_layers", None)
    found = [(name, len(mod)) for name, mod in model.named_modules()
             if isinstance(mod, nn.ModuleList) and len(mod) and any(is_linear(m) for m in mod[0].modules())]
    if not found:
        return None
    exact = [f for f in found if f[1] == want]
    pool = exact or found
    return min(pool, key=lambda f: (-f[1], f[0].count("."), f[0]))[0]


def _role_of(path: str) -> tuple[str, int] | None:
    """(role, order within the role) of a linear at ``path`` in a decoder layer, or None if ambiguous."""
    parts = path.lower().split(".")
    leaf, context = parts[-1], ".".join(parts[:-1])
    in_attn = bool(_ATTN_CONTEXT.search(context))
    in_mlp = bool(_MLP_CONTEXT.search(context))
    if in_attn and in_mlp:
        return None
    if leaf in _QKV and not in_mlp and (in_attn or leaf not in ("q", "k", "v")):
        return "attn_qkv", _QKV[leaf]
    if leaf in _ATTN_OUT and in_attn:
        return "attn_out", 0
    if leaf in _MLP_IN and (in_mlp or (not in_attn and leaf not in ("gate", "up"))):
        return "mlp_in", _MLP_IN[leaf]
    if leaf in _MLP_OUT and (in_mlp or (not in_attn and leaf not in ("c_proj", "wo"))):
        return "mlp_out", 0
    return None


def _fused_experts(layer: nn.Module) -> tuple[list[str], set[str]]:
    """Paths of transformers 5's fused-experts modules in a layer, and of their routers (kept in float).

    A router is a sibling module whose matrix has one row per expert.
    """
    experts, routers = [], set()
    for name, module in layer.named_modules():
        if not is_fused_experts(module):
            continue
        experts.append(name)
        parent = layer.get_submodule(name.rpartition(".")[0]) if "." in name else layer
        prefix = f"{name.rpartition('.')[0]}." if "." in name else ""
        for sib_name, sib in parent.named_children():
            w = getattr(sib, "weight", None)
            if not is_linear(sib) and isinstance(w, nn.Parameter) and w.dim() == 2 \
                    and w.shape[0] == module.gate_up_proj.shape[0]:
                routers.add(prefix + sib_name)
    return experts, routers


def _unplaceable_weights(layer: nn.Module, skip: set[str]) -> list[str]:
    """Modules of a layer with a matrix (or larger) weight that are not linears: fused experts, routers, custom classes."""
    out = []
    for name, module in layer.named_modules():
        if is_linear(module) or name in skip:
            continue
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() >= 2:
                kind = "fused expert tensor" if p.dim() == 3 else "matrix in a non-Linear module"
                out.append(f"{name}.{pname} ({kind} {tuple(p.shape)}, {type(module).__name__})")
    return out


def infer_spec(model: nn.Module, supported: list[str] | None = None) -> ArchSpec:
    """The spec of a model type in no table, from its module names; logs the mapping it inferred.

    Raises :class:`UnsupportedArchitectureError` naming what could not be placed, and how to
    write a spec plugin instead.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)

    def refuse(why: str) -> UnsupportedArchitectureError:
        known = f"; the table supports: {', '.join(sorted(supported))}" if supported is not None else ""
        return UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported{known}; the module-name fallback cannot map it: {why}. "
            f"Write its ArchSpec (decoder layer list, the modules of each role in forward order) and return it "
            f"from a plugin's fairgptq_architectures hook (example: examples/plugins/phi_architecture.py; "
            f"see docs/architectures.md), or check the mapping with 'fairgptq inspect MODEL'.")

    layers_path = find_decoder_layers(model)
    if layers_path is None:
        raise refuse("no list of decoder layers holding linear modules was found")
    layer = model.get_submodule(layers_path)[0]
    placed: dict[str, list[tuple[int, str]]] = {r: [] for r in ROLES}
    unplaced, transposed = [], set()
    for name, module in layer.named_modules():
        if not is_linear(module):
            continue
        role = _role_of(name)
        if role is None:
            unplaced.append(f"{name} ({type(module).__name__})")
            continue
        placed[role[0]].append((role[1], name))
        transposed.add(type(module).__name__ == "Conv1D")
    experts, routers = _fused_experts(layer)
    odd = _unplaceable_weights(layer, set(experts) | routers)
    if unplaced or odd:
        raise refuse(f"in {layers_path}.0, no role for {', '.join(unplaced + odd)}")
    if len(transposed) > 1:
        raise refuse(f"{layers_path}.0 mixes Conv1D and Linear modules")
    roles = {r: tuple(n for _, n in sorted(placed[r], key=lambda p: p[0])) for r in ROLES if placed[r]}
    if not roles and not experts:
        raise refuse(f"{layers_path}.0 has no linear modules")
    fused = {n: _FUSED[n.rsplit(".", 1)[-1].lower()] for names in roles.values() for n in names
             if n.rsplit(".", 1)[-1].lower() in _FUSED}
    spec = ArchSpec(layers=layers_path, roles=roles, transposed=transposed == {True}, tree_attention=False,
                    fused=fused, experts=tuple(experts))
    key = (str(model_type), repr(spec))
    if key not in _logged:
        _logged.add(key)
        log.warning("architecture %r has no spec; inferred from module names: layers %s, %s%s", model_type,
                    layers_path, "; ".join(f"{r}: {', '.join(n)}" for r, n in roles.items()),
                    f"; routed experts (fused): {', '.join(experts)}, router(s) in float: {', '.join(sorted(routers))}"
                    if experts else "")
    return spec
