"""Layer-by-layer quantization of a Hugging Face causal LM (the GPTQ recipe).

1. Run the embeddings once per batch and catch what enters decoder layer 0
   (hidden states plus the layer's keyword arguments: masks, rotary embeddings).
2. For each decoder layer, run it on every batch of every stream, pausing at each
   role's first module in forward order (true-sequential, see layer_runs.py): at a
   pause, accumulate H from the Hessian streams; ask the objectives for their
   H_bias terms; solve every module of the role (they share H, factored once) and
   write the dequantized weight back, then resume, so later roles see quantized outputs.
3. The finished runs' outputs are the next layer's inputs.

Only one layer's Hessians and captured inputs are alive at a time; the lm_head and
embeddings are never touched.  Step 2 is :meth:`LayerQuantizer.quantize_layer`, which the
sequential onloader (fairgptq.onload) calls too, on layers it reads from disk one at a time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Mapping

import torch
import torch.nn as nn

from .architectures import ArchSpec, arch_for, decoder_layers
from .backend import Backend
from .errors import ConfigError
from .experts import check_expert_layers, expert_groups, read_weight, routed_targets, unfused_experts, write_weight
from .gptq import QuantizedWeight, reconstruction_loss
from .layer_runs import LayerRuns, RestartedRuns
from .objective import Captured, FairSettings, Objective, TokenBatch
from .score_gradient import GradientPasses
from .quantizer import QuantConfig

CALIBRATION = "calibration"


class _StopForward(Exception):
    """Raised by a pre-hook once the wanted input is caught, to skip the rest of the forward."""


@dataclass
class ModuleReport:
    """Per-module record for the run report: stability events and the fair update's effect."""

    name: str
    layer: int
    role: str
    shape: tuple[int, int]
    stability: dict
    #: the layer-wise loss GPTQ minimises, tr((W − Ŵ) H (W − Ŵ)ᵀ) with W the module's weight before any
    #: objective's pre-update and H its calibration Hessian (what IST-DASLab's fasterquant and
    #: llm-compressor's quantize_weight return per module)
    gptq_loss: float | None = None
    fair_mode: str | None = None
    fair_radius: float | None = None
    fair_overshoot: bool = False
    delta_w_rel: float | None = None
    hbias_trace_ratio: float | None = None
    # first-order change of the linear term's score: by the pre-update alone, and after rounding
    score_change_pre_update: float | None = None
    score_change_quantized: float | None = None
    # a routed expert's slice (core/experts.py): the calibration tokens the router sent to it
    routed_tokens: int | None = None
    # why a quadratic term that targets this module added nothing (a routed expert no pair token reaches)
    fair_skipped: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QuantizationResult:
    qweights: dict[str, QuantizedWeight]
    reports: list[ModuleReport]
    config: QuantConfig
    seconds: float
    objectives: list[dict] = field(default_factory=list)


@dataclass
class StreamState:
    """Hidden states entering the current layer, with the layers' call arguments, per batch.

    ``kwargs`` are decoder layer 0's.  A model whose layers take different masks or rotary tables
    by layer type (``config.layer_types``: Gemma 2/3's sliding and full attention) has each other
    type's arguments in ``kwargs_by_type``; :meth:`kwargs_for` picks a layer's.
    """

    hidden: list[torch.Tensor]
    args: list[tuple]
    kwargs: list[dict]
    masks: list[torch.Tensor]
    layer_types: list[str] | None = None
    kwargs_by_type: dict[str, list[dict]] = field(default_factory=dict)

    def kwargs_for(self, li: int) -> list[dict]:
        """The keyword arguments decoder layer ``li`` is called with, per batch."""
        if not self.kwargs_by_type:
            return self.kwargs
        return self.kwargs_by_type[self.layer_types[li]]


def _layer_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _layer_types(model: nn.Module, n_layers: int) -> list[str] | None:
    """``config.layer_types`` where the layers differ by type (and the list covers them), else None."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None)
    if not types or len(types) < n_layers or len(set(types[:n_layers])) < 2:
        return None
    return list(types[:n_layers])


def _call_kwargs(kwargs: dict) -> dict:
    """A layer's keyword arguments to call it with again: no cache, and the hidden states given apart."""
    kwargs = {k: v for k, v in kwargs.items()
              if k not in ("hidden_states", "past_key_value", "past_key_values", "layer_past")}
    kwargs["use_cache"] = False
    return kwargs


def capture_first_layer_inputs(model: nn.Module, layers: nn.ModuleList, batches: list[TokenBatch],
                                device: torch.device) -> StreamState:
    """Run the model up to decoder layer 0 on every batch and keep what enters it (nothing after runs).

    Where layers differ by type, the forward goes on to the first layer of each type, to keep the
    arguments the model gives that type; the layers in between are skipped (their forward passes
    the hidden states through), so nothing is computed and an onloaded model's layers need no weights.
    """
    types = _layer_types(model, len(layers))
    firsts = {} if types is None else {t: types.index(t) for t in dict.fromkeys(types)}
    last = max(firsts.values(), default=0)
    state = StreamState([], [], [], [], layer_types=types, kwargs_by_type={t: [] for t in firsts})

    def hook(li, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # left in place: a pass-through layer returns it
        call = _call_kwargs(kwargs)
        if li == 0:
            state.hidden.append(hidden.detach())
            state.args.append(tuple(args[1:]))
            state.kwargs.append(call)
        if types is not None and firsts[types[li]] == li:
            state.kwargs_by_type[types[li]].append(call)
        if li == last:
            raise _StopForward

    def passthrough(*args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]

    handles = [layers[li].register_forward_pre_hook(partial(hook, li), with_kwargs=True) for li in range(last + 1)]
    for li in range(last):
        layers[li].forward = passthrough
    try:
        for b in batches:
            try:
                model(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device), use_cache=False)
            except _StopForward:
                pass
            state.masks.append(b.attention_mask.to(torch.bool))
    finally:
        for h in handles:
            h.remove()
        for li in range(last):
            del layers[li].forward
    return state


@dataclass
class LayerQuantizer:
    """Everything the per-layer step needs that does not change from layer to layer.

    Shared by :func:`quantize_model` (the whole model in memory) and the sequential onloader
    (fairgptq.onload), which materializes one layer at a time: both call :meth:`quantize_layer`
    on each decoder layer in turn, so both compute the same codes.
    """

    spec: ArchSpec
    config: QuantConfig
    n_layers: int
    roles: tuple[str, ...]
    hessian_streams: set[str]
    objectives: list[Objective]
    backend: Backend
    # restart each batch's forward per role instead of pausing them all (layer_runs.py): ~2.6x the
    # layer forwards for a fraction of the memory; sequential onloading's choice
    restart_forwards: bool = False
    # sequential score gradients: called with the layer index before the layer is quantized
    refresh_gradients: Callable[[int], None] | None = None

    def quantize_layer(self, li: int, layer: nn.Module,
                       states: dict[str, StreamState]) -> tuple[dict[str, QuantizedWeight], list[ModuleReport]]:
        """Quantize decoder layer ``li`` in place; afterwards ``states`` hold the next layer's inputs.

        Returns the layer's quantized weights (by full module name) and their reports.
        """
        qweights: dict[str, QuantizedWeight] = {}
        reports: list[ModuleReport] = []
        if self.refresh_gradients is not None:
            self.refresh_gradients(li)
        todo = [(role, names) for role, names in self.spec.roles.items() if role in self.roles]
        routed = [g for g in expert_groups(layer, self.spec) if g[0] in self.roles]
        with unfused_experts(layer, self.spec):
            firsts = [layer.get_submodule(names[0]) for _, names in todo + routed]
            calls = {s: list(zip(st.hidden, st.args, st.kwargs_for(li))) for s, st in states.items()}
            with (RestartedRuns if self.restart_forwards else LayerRuns)(layer, calls, firsts) as runs:
                for i, ((role, names), first) in enumerate(zip(todo + routed, firsts)):
                    mods = [layer.get_submodule(n) for n in names]
                    captured = {s: [Captured(_batch_shaped(x, m), m) for x, m in zip(xs, states[s].masks)]
                                for s, xs in runs.inputs_of(first).items()}
                    for name, qweight, report in self.solve_role(li, role, names, mods, captured,
                                                                 routed=i >= len(todo)):
                        qweights[name] = qweight
                        reports.append(report)
                    del captured
                outputs = runs.outputs()
        del calls
        for s, st in states.items():
            st.hidden = [_layer_output(o).detach() for o in outputs[s]]
        return qweights, reports

    def solve_role(self, li: int, role: str, names: tuple[str, ...], mods: list[nn.Module],
                   captured: dict[str, list[Captured]], routed: bool = False,
                   ) -> list[tuple[str, QuantizedWeight, ModuleReport]]:
        """Sum H over the Hessian streams, take the objectives' terms, solve every module of one role.

        The role's modules share one input, so one H and one factorisation; each is written back
        dequantized at once, so later roles of the layer see the rounded outputs (true-sequential).
        A ``routed`` expert's input is zero on the tokens routed elsewhere (core/experts.py); one that
        no calibration token reached has H = 0, replaced by the identity: round to nearest on GPTQ's grid.
        The objectives targeting the role apply to every routed expert's matrix as to a dense module: a
        pair term on the expert's own captured inputs (zero where a token went elsewhere, so X⁰ − X¹ is
        the expert's share of the pair's difference), a linear term on its slice's score gradient with
        its own H.  A term that comes back all zero (no pair token reaches the expert) is dropped and
        the report says so (``fair_skipped``).
        """
        spec, backend, config = self.spec, self.backend, self.config
        full0 = f"{spec.layers}.{li}.{names[0]}"
        acc = backend.hessian_accumulator(captured[next(iter(self.hessian_streams))][0].x.shape[-1])
        active = [o for o in self.objectives if o.applies(li, role, self.n_layers)]
        n_routed = _routed_tokens(captured, self.hessian_streams) if routed else None
        H_bias, fair = _quadratic_terms(li, role, captured, active, full0)
        skipped = None
        if H_bias is not None and not bool(H_bias.any()):
            skipped = "H_bias = 0: every pair difference at this module's input is 0 (no pair token reaches it)"
            H_bias, fair = None, None
        for s in sorted(self.hessian_streams):  # the objectives are done with the inputs: free each batch once added
            batches = captured.pop(s)
            while batches:
                batch = batches.pop(0)
                acc.add(batch.x, batch.mask, module=full0)
                del batch
        H = acc.hessian()
        if n_routed == 0:
            H = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        # in_loop solves on H + H_bias, not H: the backend factors that in each module's solve
        shared = None if fair is not None and fair.mode == "in_loop" else backend.factor(H, config, module=full0)
        h_trace = float(torch.diagonal(H).sum())
        solved = []
        for name, mod in zip(names, mods):
            full = f"{spec.layers}.{li}.{name}"
            W = spec.weight_of(mod)
            linear_objectives = [o for o in active if type(o).linear is not Objective.linear]
            C, G = (_linear_terms(li, role, full, linear_objectives,
                                  shared or backend.factor_for_objectives(H, config, module=full))
                    if linear_objectives else (None, None))
            W0 = W.float().clone() if G is not None else None
            extra = {} if C is None else {"linear": C}  # a backend written before linear terms still solves the rest
            sol = backend.solve(W, H, H_bias, config, fair, module=full, factored=shared, **extra)
            W_hat = sol.qweight.dequantize()
            loss = reconstruction_loss(W.to(H.device), W_hat.to(H.device), H)  # before W (a view) is overwritten
            spec.set_weight(mod, W_hat)
            rep = ModuleReport(full, li, role, tuple(W.shape), sol.qweight.stability.to_dict(), gptq_loss=loss,
                               routed_tokens=n_routed)
            if n_routed == 0:
                rep.stability["no_routed_tokens"] = "H = identity: rounded to nearest on GPTQ's grid"
            rep.fair_skipped = skipped
            if H_bias is not None or C is not None:
                rep.fair_mode = sol.fair.mode if sol.fair else fair.mode
                if sol.fair is not None:
                    rep.delta_w_rel = sol.fair.rel_change
            if H_bias is not None:
                rep.hbias_trace_ratio = float(torch.diagonal(H_bias).sum()) / max(h_trace, 1e-30)
                if sol.fair is not None:
                    rep.fair_radius, rep.fair_overshoot = sol.fair.radius, sol.fair.overshoot
            if G is not None:
                G = G.to(W0.device)
                if sol.fair is not None:
                    rep.score_change_pre_update = float((G * (sol.fair.W.to(W0.device) - W0)).sum())
                rep.score_change_quantized = float((G * (W_hat.to(W0.device) - W0)).sum())
            solved.append((full, sol.qweight, rep))
        return solved


def _batch_shaped(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A module input as Captured promises it, (batch, seq, in): a routed expert's arrives as the MoE block's
    flattened (batch·seq, in) rows, which every objective (a plugin's too) would otherwise misread."""
    if x.dim() == 2 and x.shape[0] == mask.numel():
        return x.view(*mask.shape, x.shape[-1])
    return x


def _routed_tokens(captured: dict[str, list[Captured]], streams: set[str]) -> int:
    """Real (unpadded) tokens with a non-zero input: those routed to the expert, in the Hessian streams."""
    return sum(int(((c.x.abs().sum(-1) != 0).reshape(-1) & c.mask.reshape(-1).to(c.x.device)).sum())
               for s in streams for c in captured[s])


def prepare_streams(calibration: list[TokenBatch] | None, objectives: list[Objective],
                    tokenizer) -> tuple[dict[str, list[TokenBatch]], set[str]]:
    """Every token stream to propagate (calibration text and the objectives' own) and those that build H."""
    streams: dict[str, list[TokenBatch]] = {}
    if calibration:
        streams[CALIBRATION] = calibration
    hessian_streams = {CALIBRATION} if calibration else set()
    for obj in objectives:
        own = obj.streams(tokenizer)
        for sname, batches in own.items():
            if sname in streams:
                raise ConfigError(f"objective {obj.name!r} asks for stream {sname!r}, which another source already uses")
            streams[sname] = batches
        if obj.builds_hessian():  # the answer the pipeline checked: all of its sentences are calibration data
            hessian_streams |= set(own)
    if not hessian_streams:
        raise ConfigError("no calibration data for H: give calibration text, or pair sets used as calibration")
    return streams, hessian_streams


def check_roles(spec: ArchSpec, roles: Iterable[str] | None) -> tuple[str, ...]:
    """The roles to quantize (default: all of the architecture's), or an error naming unknown ones."""
    quant_roles = tuple(roles) if roles is not None else spec.role_names()
    unknown_roles = [r for r in quant_roles if r not in spec.role_names()]
    if unknown_roles:
        raise ConfigError(f"unknown role(s) {unknown_roles}; the roles are {list(spec.role_names())}")
    return quant_roles


def quantize_model(
    model: nn.Module,
    calibration: list[TokenBatch] | None,
    config: QuantConfig,
    *,
    objectives: Iterable[Objective] = (),
    tokenizer=None,
    roles: Iterable[str] | None = None,
    progress: bool = True,
    backend: Backend | None = None,
    architectures: Mapping[str, ArchSpec] | None = None,
) -> QuantizationResult:
    """Quantize ``model`` in place (weights replaced by their dequantized values).

    ``calibration`` batches build H; objectives may add streams (and mark some of
    them as Hessian streams).  The ``backend`` (fairgptq.backends; default: the plain
    :class:`~fairgptq.core.backend.Backend` on the model's device) decides where and in what
    precision H is accumulated, factored and solved, which input columns stay unrounded,
    and the threads used while the run lasts.  ``architectures`` is the family table the model is
    looked up in (default: the built-in one; :func:`fairgptq.quantize_model` passes the registry's,
    plugins' families included).
    """
    spec = arch_for(model, architectures)
    layers = decoder_layers(model, spec)
    objectives = list(objectives)
    device = next(model.parameters()).device
    backend = backend or Backend(device)
    quant_roles = check_roles(spec, roles)
    check_expert_layers(layers, spec)
    streams, hessian_streams = prepare_streams(calibration, objectives, tokenizer)
    gradients = GradientPasses(model, spec, len(layers), objectives, tokenizer,
                               _targets(layers, spec, quant_roles), device)
    step = LayerQuantizer(spec, config, len(layers), quant_roles, hessian_streams, objectives, backend,
                          refresh_gradients=gradients.refresh if gradients.sequential else None)

    t0 = time.perf_counter()
    qweights: dict[str, QuantizedWeight] = {}
    reports: list[ModuleReport] = []
    was_training = model.training
    model.eval()
    with torch.no_grad(), backend.activate(), LayerProgress(progress, len(layers)) as advance:
        if gradients:
            gradients.on_float_model(calibration, backend, config)
            _apply_float_updates(model, spec, objectives)
        states = {s: capture_first_layer_inputs(model, layers, b, device) for s, b in streams.items()}
        for li, layer in enumerate(layers):
            layer_q, layer_r = step.quantize_layer(li, layer, states)
            qweights.update(layer_q)
            reports.extend(layer_r)
            advance(li)
    model.train(was_training)
    return QuantizationResult(qweights, reports, config, time.perf_counter() - t0,
                              [o.describe() for o in objectives])


def _targets(layers: nn.ModuleList, spec: ArchSpec, roles: tuple[str, ...]) -> list[tuple[int, str, str, nn.Module]]:
    """(layer, role, full name, module) of every module the run quantizes; a routed expert's matrix as its
    :class:`~fairgptq.core.experts.RoutedSlice` of the fused tensor (its gradient is that slice's)."""
    dense = [(li, role, f"{spec.layers}.{li}.{name}", layer.get_submodule(name))
             for li, layer in enumerate(layers) for role in roles for name in spec.roles.get(role, ())]
    routed = [(li, role, f"{spec.layers}.{li}.{name}", target) for li, layer in enumerate(layers)
              for role, name, target in routed_targets(layer, spec) if role in roles]
    return dense + routed


def _apply_float_updates(model: nn.Module, spec: ArchSpec, objectives: list[Objective]) -> None:
    """Write the objectives' float-model weight changes ("debias, then quantize") before any layer is solved."""
    for obj in objectives:
        for name, delta in (obj.float_model_update() or {}).items():
            W = read_weight(model, spec, name).float()
            if tuple(delta.shape) != tuple(W.shape):
                raise ConfigError(f"objective {obj.name!r} changes {name} by a {tuple(delta.shape)} matrix; the "
                                  f"weight is {tuple(W.shape)} (out x in)")
            write_weight(model, spec, name, W + delta.to(W))


def _quadratic_terms(li: int, role: str, captured: dict[str, list[Captured]], objectives: list[Objective],
                     module: str) -> tuple[torch.Tensor | None, FairSettings | None]:
    """The summed H_bias of the objectives targeting (li, role), and how it is solved (they must agree)."""
    H_bias, fair = None, None
    for obj in objectives:
        term = obj.term(li, role, captured)
        if term is None:
            continue
        settings = obj.settings or FairSettings()
        if fair is not None and settings != fair:
            raise ConfigError(f"{module}: objectives disagree on the update ({fair} vs {settings}); "
                              f"give every objective targeting this module the same mode")
        fair = settings
        H_bias = term if H_bias is None else H_bias + term
    return H_bias, fair


def _linear_terms(li: int, role: str, module: str, objectives: list[Objective],
                  factored) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The summed C of the objectives' linear terms for ``module``, and the summed score gradient (for the report)."""
    C, G = None, None
    for obj in objectives:
        term = obj.linear(li, role, module, factored)
        if term is None:
            continue
        C = term.coefficient if C is None else C + term.coefficient
        if term.gradient is not None:
            G = term.gradient if G is None else G + term.gradient
    return C, G


class LayerProgress:
    """rich progress over decoder layers (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda i: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
        self._p = Progress("[bold]quantizing layers", BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._p.__enter__()
        task = self._p.add_task("layers", total=self.total)
        return lambda i: self._p.update(task, completed=i + 1)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._p.__exit__(*exc)
