"""Routed experts stored as fused 3-D tensors (transformers 5's Mixtral, Qwen-MoE, OLMoE), quantized per expert.

transformers 5 keeps a sparse MoE block's experts in one module with two parameters,
``gate_up_proj`` (experts, 2 x intermediate, hidden) and ``down_proj`` (experts, hidden,
intermediate), and routes tokens inside its forward.  GPTQ needs each expert's own input: the
tokens the router sends to it.  While a layer is quantized, :func:`unfused_experts` gives every
expert's two matrices their own module, a :class:`ExpertLinear` whose weight is a view of its slice
of the fused tensor (writing the quantized weight writes the tensor), and runs the block's forward
through them, every expert in order (gate_up then down), so the driver's pauses see each in turn.

Each expert is fed every token of the batch with the rows not routed to it set to zero: zero rows
add nothing to H = Σ x xᵀ, so H is the routed tokens', normalised per sentence of the batch like a
dense module's (the driver gives the block's flattened (batch·seq) rows their (batch, seq) shape
back), so an objective's term weighs against an expert's H as against a dense module's.  The
router (``gate``) is never a role: it stays in float.  The output of the block is the same
computation as transformers' eager forward for every routed token.

The same captured inputs carry the objectives to the experts: a pair term differences an expert's
inputs at the pair's aligned positions (zero rows where a token went elsewhere: the expert's share
of the pair's difference, before the routing weight, which multiplies the down projection's output);
a score gradient is taken on the fused parameter and sliced per expert (:class:`RoutedSlice`), and
:func:`read_weight` / :func:`write_weight` let a whole-model step write an expert's slice.

A checkpoint stores the experts the way GPTQModel loads them (its definitions for mixtral, qwen2_moe,
qwen3_moe and olmoe, after ``defuser`` splits transformers 5's fused tensors into per-expert
``nn.Linear`` modules): ``<experts>.<e>.gate_proj`` and ``<experts>.<e>.up_proj`` (the two halves of
``gate_up_proj[e]``, gate first, as transformers' forward chunks it) and ``<experts>.<e>.down_proj``.
:func:`checkpoint_split` names a quantized slice's matrices in that layout and
:func:`checkpoint_slot` maps a stored name back to its rows of the fused tensor.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .arch_spec import ArchSpec
from .errors import UnsupportedArchitectureError
from .gptq import QuantizedWeight

GATE_UP, DOWN = "gate_up_proj", "down_proj"
PER_EXPERT = {GATE_UP: "gate_up_proj_per_expert", DOWN: "down_proj_per_expert"}
FUSED = {v: k for k, v in PER_EXPERT.items()}
#: the per-expert checkpoint modules: which fused tensor each is a slice of, and which half of its rows
CHECKPOINT_PROJ = {"gate_proj": (GATE_UP, 0), "up_proj": (GATE_UP, 1), "down_proj": (DOWN, None)}


class ExpertLinear(nn.Module):
    """One expert's matrix as a bias-free linear; ``weight`` is a view of the fused tensor's slice."""

    def __init__(self, fused: nn.Parameter, index: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(fused.data[index], requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def is_fused_experts(module: nn.Module) -> bool:
    """transformers 5's experts layout: 3-D ``gate_up_proj`` and ``down_proj`` parameters."""
    params = dict(module.named_parameters(recurse=False))
    return all(k in params and params[k].dim() == 3 for k in (GATE_UP, DOWN))


def is_routed_expert(name: str) -> bool:
    """Whether a quantized module's name is a routed expert's slice (a module only while the layer is quantized)."""
    return any(f".{m}." in f".{name}" for m in PER_EXPERT.values())


def check_expert_layers(layers: nn.ModuleList, spec: ArchSpec) -> None:
    """Every decoder layer must hold the spec's experts modules: a dense-MLP layer among MoE layers has no roles."""
    for li, layer in enumerate(layers):
        for path in spec.experts:
            try:
                module = layer.get_submodule(path)
            except AttributeError:
                module = None
            if module is None or not is_fused_experts(module):
                raise UnsupportedArchitectureError(
                    f"decoder layer {li} has no fused experts at {path} (a dense MLP layer among mixture-of-experts "
                    f"layers: mlp_only_layers / decoder_sparse_step in the config); fairgptq's spec has one layout "
                    f"for every layer, so it would leave that MLP in float: not supported yet")


def expert_groups(layer: nn.Module, spec: ArchSpec) -> list[tuple[str, tuple[str, ...]]]:
    """(role, (module,)) of every routed expert's matrices in forward order: gate_up (mlp_in), then down (mlp_out).

    Each expert has its own input, so each matrix is its own group (its own H).
    """
    groups = []
    for path in spec.experts:
        n = layer.get_submodule(path).gate_up_proj.shape[0]
        for e in range(n):
            groups.append(("mlp_in", (f"{path}.{PER_EXPERT[GATE_UP]}.{e}",)))
            groups.append(("mlp_out", (f"{path}.{PER_EXPERT[DOWN]}.{e}",)))
    return groups


def _unfused_forward(experts: nn.Module):
    gate_up, down = getattr(experts, PER_EXPERT[GATE_UP]), getattr(experts, PER_EXPERT[DOWN])

    def forward(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        for e in range(len(gate_up)):
            top_k_pos, token_idx = torch.where((top_k_index == e).T)
            routed = torch.zeros(hidden_states.shape[0], 1, dtype=hidden_states.dtype, device=hidden_states.device)
            routed[token_idx] = 1
            gate, up = gate_up[e](hidden_states * routed).chunk(2, dim=-1)
            h = down[e](experts.act_fn(gate) * up * routed)
            out.index_add_(0, token_idx, (h[token_idx] * top_k_weights[token_idx, top_k_pos, None]).to(out.dtype))
        return out

    return forward


@contextmanager
def unfused_experts(layer: nn.Module, spec: ArchSpec) -> Iterator[None]:
    """Give every routed expert's matrices their own modules, and route the block's forward through them."""
    patched = []
    try:
        for path in spec.experts:
            experts = layer.get_submodule(path)
            for fused, per_expert in PER_EXPERT.items():
                param = getattr(experts, fused)
                setattr(experts, per_expert, nn.ModuleList(ExpertLinear(param, e) for e in range(param.shape[0])))
            experts.forward = _unfused_forward(experts)
            patched.append(experts)
        yield
    finally:
        for experts in patched:
            del experts.forward
            for per_expert in PER_EXPERT.values():
                delattr(experts, per_expert)


def expert_slices(layer: nn.Module, spec: ArchSpec) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, (out, in) view) of every routed expert matrix of a layer, for whole-model passes such as RTN."""
    for path in spec.experts:
        experts = layer.get_submodule(path)
        for fused, per_expert in PER_EXPERT.items():
            param = getattr(experts, fused)
            for e in range(param.shape[0]):
                yield f"{path}.{per_expert}.{e}", param.data[e]


@contextmanager
def unfused_model(layers: nn.ModuleList, spec: ArchSpec) -> Iterator[None]:
    """:func:`unfused_experts` on every layer at once, for whole-model passes that hook each expert's input."""
    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(unfused_experts(layer, spec))
        yield


@dataclass(frozen=True)
class RoutedSlice:
    """A routed expert's matrix as a gradient target: the fused 3-D parameter and the expert's index in it.

    Autograd differentiates the parameter transformers' own forward reads (the fused tensor, routed
    as transformers routes); the expert's gradient is its slice of that gradient.  ``weight`` is the
    (out, in) view, as a module's would be.
    """

    fused: nn.Parameter
    index: int

    @property
    def weight(self) -> torch.Tensor:
        return self.fused.data[self.index]


def routed_targets(layer: nn.Module, spec: ArchSpec) -> list[tuple[str, str, RoutedSlice]]:
    """(role, name in the layer, slice) of every routed expert matrix of a layer, in :func:`expert_groups`' order."""
    out = []
    for role, (name,) in expert_groups(layer, spec):
        owner, fused, e = routed_parts(name)
        out.append((role, name, RoutedSlice(getattr(layer.get_submodule(owner), fused), e)))
    return out


def read_weight(model: nn.Module, spec: ArchSpec, name: str) -> torch.Tensor:
    """The (out, in) weight (a view) of a quantized module's full name, a routed expert's slice included."""
    return routed_slice(model, name) if is_routed_expert(name) else spec.weight_of(model.get_submodule(name))


def write_weight(model: nn.Module, spec: ArchSpec, name: str, W: torch.Tensor) -> None:
    """Write an (out, in) weight into a quantized module's full name, a routed expert's slice included."""
    if is_routed_expert(name):
        view = routed_slice(model, name)
        view.copy_(W.to(view.dtype))
    else:
        spec.set_weight(model.get_submodule(name), W)


def routed_parts(name: str) -> tuple[str, str, int]:
    """(experts module path, fused parameter name, expert index) of a routed expert's quantized name."""
    path, e = name.rsplit(".", 1)
    owner, per_expert = path.rsplit(".", 1)
    return owner, FUSED[per_expert], int(e)


def routed_slice(model: nn.Module, name: str) -> torch.Tensor:
    """The (out, in) view of the fused tensor that a routed expert's quantized name stands for."""
    owner, fused, e = routed_parts(name)
    return getattr(model.get_submodule(owner), fused).data[e]


def _rows(qw: QuantizedWeight, rows: slice) -> QuantizedWeight:
    """The quantized matrix's output rows ``rows``: the same codes, grid and kept input columns.

    The per-column tensors are copied: a checkpoint file cannot hold two names for one tensor.
    """
    return replace(qw, codes=qw.codes[rows], scales=qw.scales[:, rows], zeros=qw.zeros[:, rows],
                   g_idx=qw.g_idx.clone(), outlier_idx=None if qw.outlier_idx is None else qw.outlier_idx.clone(),
                   outlier_weight=None if qw.outlier_weight is None else qw.outlier_weight[rows])


def checkpoint_split(name: str, qw: QuantizedWeight) -> list[tuple[str, QuantizedWeight]]:
    """The checkpoint modules of a quantized matrix: itself, or a routed slice's per-expert projections.

    Output rows are independent in GPTQ (each row's codes depend only on its own weights and the
    shared H), so gate_up's two halves are exactly two quantized matrices with the same grid layout.
    """
    if not is_routed_expert(name):
        return [(name, qw)]
    owner, fused, e = routed_parts(name)
    if fused == DOWN:
        return [(f"{owner}.{e}.down_proj", qw)]
    half = qw.codes.shape[0] // 2
    return [(f"{owner}.{e}.gate_proj", _rows(qw, slice(0, half))),
            (f"{owner}.{e}.up_proj", _rows(qw, slice(half, None)))]


def per_expert_modules(model: nn.Module, key: str) -> list[list[str]]:
    """The checkpoint modules of a fused experts parameter ``key``, per expert in row order ([] for another key).

    ``<experts>.gate_up_proj`` -> [[<experts>.0.gate_proj, <experts>.0.up_proj], ...]; ``down_proj`` -> [[.0.down_proj], ...].
    """
    owner, _, fused = key.rpartition(".")
    if fused not in (GATE_UP, DOWN) or not owner:
        return []
    try:
        experts = model.get_submodule(owner)
    except AttributeError:
        return []
    if not is_fused_experts(experts):
        return []
    projs = [p for p, (f, _) in CHECKPOINT_PROJ.items() if f == fused]  # gate before up
    return [[f"{owner}.{e}.{p}" for p in projs] for e in range(getattr(experts, fused).shape[0])]


def checkpoint_slot(model: nn.Module, name: str) -> tuple[str, torch.Tensor] | None:
    """(fused parameter's state-dict key, (out, in) view of its rows) of a stored per-expert module name.

    None when ``name`` is not ``<experts>.<e>.gate_proj|up_proj|down_proj`` of a fused experts module.
    """
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or parts[2] not in CHECKPOINT_PROJ or not parts[1].isdigit():
        return None
    owner, e, proj = parts[0], int(parts[1]), parts[2]
    try:
        experts = model.get_submodule(owner)
    except AttributeError:
        return None
    if not is_fused_experts(experts):
        return None
    fused, half = CHECKPOINT_PROJ[proj]
    param = getattr(experts, fused)
    if e >= param.shape[0]:
        return None
    view = param.data[e]
    if half is not None:
        n = view.shape[0] // 2
        view = view[:n] if half == 0 else view[n:]
    return f"{owner}.{fused}", view
