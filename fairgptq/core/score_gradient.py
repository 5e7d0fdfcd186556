"""Gradients of a token-level score, and float-model input Hessians, for objectives that ask for them.

An objective with a linear term (core/objective.py) needs G = ∂S/∂W of a score
S = Σ w · log p(token) for each module it targets.  :func:`score_gradient` computes it with one
forward and one backward pass per batch, taking gradients only of the targeted weights (every
other parameter is frozen for the pass, so autograd stops at the lowest targeted layer), and
pushing only the positions that are scored through the output head (``logits_to_keep``), since the
vocabulary projection dominates a small model's cost.  :class:`GradientPasses` is what the driver
calls: the float model's pass once before quantization, then, for sequential requests, a pass per
layer on the partially quantized model.

A routed expert of a mixture-of-experts model (core/experts.py) is a slice of a fused 3-D parameter:
its gradient is that slice of the fused parameter's gradient, through transformers' own forward (the
router's top-k choice is a selection, so the gradient reaches an expert through the tokens routed to it,
scaled by their routing weights), and its float input Hessian is summed from the tokens routed to it.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from .architectures import ArchSpec
from .errors import ConfigError
from .experts import RoutedSlice, is_routed_expert, read_weight, unfused_model, write_weight
from .gptq import FactoredHessian, factor_for
from .objective import Objective, ProbeReading, ScoreGradient, ScoreRequest, StepProbe, TokenBatch
from .quantizer import QuantConfig
from .stability import check_finite

if TYPE_CHECKING:
    from .backend import Backend


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def score_gradient(model: nn.Module, request: ScoreRequest, modules: dict[str, nn.Module | RoutedSlice],
                   spec: ArchSpec, device: torch.device) -> ScoreGradient:
    """S and ∂S/∂W (out x in, float32) of every module in ``modules`` (full name -> module, or a routed
    expert's :class:`~fairgptq.core.experts.RoutedSlice`), on ``model`` as it is.

    Nothing else of the model changes: every parameter's ``requires_grad`` is restored afterwards and no
    gradient is left on any weight.
    """
    if len(request.batches) != len(request.weights):
        raise ConfigError(f"a score request has {len(request.batches)} batches but {len(request.weights)} weight tensors")
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in flags:
        p.requires_grad_(False)
    weights = {name: m.fused if isinstance(m, RoutedSlice) else m.weight for name, m in modules.items()}
    for w in weights.values():
        w.grad = None
        w.requires_grad_(True)
    keep_logits = _accepts_logits_to_keep(model)
    value = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for batch, w in zip(request.batches, request.weights):
                value += _batch_score(model, batch, w, device, keep_logits)
        grads = {}
        for name, w in weights.items():
            g = torch.zeros_like(w, dtype=torch.float32) if w.grad is None else w.grad.detach().float()
            routed = modules[name]
            grads[name] = (g[routed.index] if isinstance(routed, RoutedSlice) else spec.stored(g)).contiguous()
            check_finite(grads[name], "the score's gradient", name)
    finally:
        for w in weights.values():
            w.grad = None
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return ScoreGradient(value, grads)


def _batch_score(model: nn.Module, batch: TokenBatch, w: torch.Tensor, device: torch.device,
                 keep_logits: bool) -> float:
    """Σ w · log p(token) over one batch; its backward pass adds to the targeted weights' ``.grad``."""
    scored = _scored_log_probs(model, batch, w, device, keep_logits)
    if scored is None:
        return 0.0
    logp, w = scored
    score = (logp * w).sum()
    if score.requires_grad:  # no targeted module: the score's value alone
        score.backward()
    return float(score.detach())


def _scored_log_probs(model: nn.Module, batch: TokenBatch, w: torch.Tensor, device: torch.device,
                      keep_logits: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """log p(token) and the weights from the batch's first scored position on (None: nothing is scored).

    Only those positions go through the output head (``logits_to_keep``), whose vocabulary-wide product
    dominates a small model's pass; a row's first token is never scored (nothing predicts it)."""
    ids = batch.input_ids.to(device)
    if tuple(w.shape) != tuple(ids.shape):
        raise ConfigError(f"score weights of shape {tuple(w.shape)} for a batch of shape {tuple(ids.shape)}")
    w = w.to(device=device, dtype=torch.float32).clone()
    w[:, 0] = 0.0
    scored = w.abs().sum(dim=0).nonzero()
    if scored.numel() == 0:
        return None
    first = int(scored.min())  # logits for positions first-1 .. end predict tokens first .. end
    seq = ids.shape[1]
    kwargs = {"logits_to_keep": seq - first + 1} if keep_logits else {}
    out = model(input_ids=ids, attention_mask=batch.attention_mask.to(device), use_cache=False, **kwargs)
    logits = out.logits[:, -(seq - first + 1):-1] if keep_logits else out.logits[:, first - 1:-1]
    # log p(token) as the negative of cross_entropy's per-token loss: the same values and gradients as
    # log_softmax + gather, without materialising the log-probabilities of the whole vocabulary (a
    # profile on SmolLM2: 5-10 % off the pass, whose cost is the objective's overhead on plain GPTQ)
    targets = ids[:, first:]
    logp = -F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                            reduction="none").view_as(targets)
    return logp, w[:, first:]


def float_input_hessians(model: nn.Module, groups: dict[str, nn.Module], batches: list[TokenBatch],
                         backend: "Backend", config: QuantConfig, device: torch.device) -> dict[str, FactoredHessian]:
    """The input Hessian of each module in ``groups`` (one per shared input) over ``batches``, factored.

    Summed as the driver sums H (same accumulator, same per-sentence normalisation, pad positions
    excluded) but on the model as it is, in one forward pass per batch, and factored with the run's
    damping: what an objective needs to weigh every module before the first is solved.  A routed
    expert that no token of ``batches`` reached has H = 0, replaced by the identity as the driver does.
    """
    accs, mask_now = {}, {}

    def hook_for(name: str):
        def hook(module, args):
            x = args[0]
            if name not in accs:
                accs[name] = backend.hessian_accumulator(x.shape[-1])
            accs[name].add(x.detach(), mask_now["mask"], module=name)
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in groups.items()]
    keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    try:
        with torch.no_grad():
            for b in batches:
                mask_now["mask"] = b.attention_mask.to(torch.bool)
                model(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device), use_cache=False,
                      **keep)
    finally:
        for h in handles:
            h.remove()
    return {name: factor_for(_routed_identity(name, acc.hessian()), config, module=name,
                             factor_dtype=backend.factor_dtype)
            for name, acc in accs.items()}


def _routed_identity(name: str, H: torch.Tensor) -> torch.Tensor:
    """A routed expert's H = 0 (no token routed to it) as the identity, the driver's rule; any other H as it is."""
    if is_routed_expert(name) and not bool(H.any()):
        return torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H


def row_scores(model: nn.Module, batch: TokenBatch, w: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Σ_t w · log p(token) of each row of one batch (forward only)."""
    scored = _scored_log_probs(model, batch, w, device, _accepts_logits_to_keep(model))
    if scored is None:
        return torch.zeros(batch.input_ids.shape[0])
    logp, w = scored
    return (logp * w).sum(1).cpu()


def token_loss(model: nn.Module, batches: list[TokenBatch], device: torch.device) -> float | None:
    """Mean next-token loss (nats) over the unpadded positions of ``batches``; None without batches.

    One row at a time: a calibration window's logits over the whole vocabulary are the pass's memory."""
    total, count = 0.0, 0
    for b in batches:
        for i in range(b.input_ids.shape[0]):
            row = TokenBatch(b.input_ids[i:i + 1], b.attention_mask[i:i + 1])
            mask = row.attention_mask.float()
            w = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, 1:] * mask[:, :-1]], 1)
            total -= float(row_scores(model, row, w, device).sum())
            count += int(w.sum())
    return total / count if count else None


def probe_step(model: nn.Module, spec: ArchSpec, objective: Objective, probe: StepProbe,
               calibration: list[TokenBatch], device: torch.device) -> list[ProbeReading]:
    """The probe's readings at each strength (see :class:`~fairgptq.core.objective.StepProbe`); the model's
    weights are the float ones again afterwards, even on an error."""
    control = calibration[:probe.control_batches] if probe.control_batches else []
    if probe.control_batches and not control:
        raise ConfigError(f"objective {objective.name!r} reads the calibration text's loss along its step; give "
                          f"calibration text (calibration.text.n > 0)")
    readings, saved = [], {}
    try:
        with torch.no_grad():
            for value in probe.values:
                for name, delta in objective.step_at(value).items():
                    if name not in saved:
                        saved[name] = read_weight(model, spec, name).clone()
                    W = saved[name].float()
                    if tuple(delta.shape) != tuple(W.shape):
                        raise ConfigError(f"objective {objective.name!r} steps {name} by a {tuple(delta.shape)} "
                                          f"matrix; the weight is {tuple(W.shape)} (out x in)")
                    write_weight(model, spec, name, W + delta.to(W))
                rows = [row_scores(model, b, w, device) for b, w in zip(probe.batches, probe.weights)]
                readings.append(ProbeReading(value, rows, token_loss(model, control, device)))
    finally:
        for name, weight in saved.items():
            read_weight(model, spec, name).copy_(weight)
    return readings


class GradientPasses:
    """The score gradients a run's objectives ask for: once on the float model, per layer when sequential.

    ``targets`` are every (layer index, role, module full name, module) the run quantizes (a routed
    expert's "module" is its :class:`~fairgptq.core.experts.RoutedSlice`); an objective's gradient covers
    the modules it applies to.
    """

    def __init__(self, model: nn.Module, spec: ArchSpec, n_layers: int, objectives: Iterable[Objective], tokenizer,
                 targets: list[tuple[int, str, str, nn.Module]], device: torch.device) -> None:
        self.model, self.spec, self.n_layers, self.device = model, spec, n_layers, device
        self.requests: list[tuple[Objective, ScoreRequest, list[tuple[int, str, str, nn.Module]]]] = []
        for obj in objectives:
            request = obj.score_request(tokenizer)
            if request is not None and not obj.needs_gradients():
                raise ConfigError(f"objective {obj.name!r} asks for a score gradient, but its settings answer "
                                  f"needs_gradients() False (validation would let an onloaded run take it); "
                                  f"answer True in its Params model (core/objective.py, ObjectiveParams)")
            if request is None:
                continue
            mine = [t for t in targets if obj.applies(t[0], t[1], n_layers)]
            if mine:
                self.requests.append((obj, request, mine))

    def __bool__(self) -> bool:
        return bool(self.requests)

    @property
    def sequential(self) -> bool:
        return any(r.sequential for _, r, _ in self.requests)

    def on_float_model(self, calibration: list[TokenBatch] | None, backend: "Backend", config: QuantConfig) -> None:
        """Each request's gradient on the float model, with the float input Hessians it asked for."""
        for obj, request, mine in self.requests:
            grad = score_gradient(self.model, request, {name: m for _, _, name, m in mine}, self.spec, self.device)
            hessians = None
            if request.float_hessian_batches != 0:
                if not calibration:
                    raise ConfigError(f"objective {obj.name!r} needs the float model's input Hessians, which are "
                                      f"summed over calibration text; give calibration text (calibration.text.n > 0)")
                hessians = self._hessians(mine, calibration[:request.float_hessian_batches], backend, config)
            obj.receive_gradient(grad, hessians)
            if request.probe is not None:
                obj.receive_probe(probe_step(self.model, self.spec, obj, request.probe, calibration or [],
                                             self.device))

    def _hessians(self, mine, batches, backend, config) -> dict[str, FactoredHessian]:
        """Float input Hessians of the targeted modules: one per shared input (a role's first module; each
        routed expert's matrix its own, from the tokens routed to it)."""
        layers = self.model.get_submodule(self.spec.layers)
        prefix = f"{self.spec.layers}."

        def key(li: int, role: str, name: str) -> str:
            return name if is_routed_expert(name) else f"{prefix}{li}.{self.spec.roles[role][0]}"

        with unfused_model(layers, self.spec):  # every expert's matrix a module whose input a hook can read
            groups = {key(li, role, name): self.model.get_submodule(key(li, role, name))
                      for li, role, name, _ in mine}
            factored = float_input_hessians(self.model, groups, batches, backend, config, self.device)
        return {name: factored[key(li, role, name)] for li, role, name, _ in mine}

    def refresh(self, layer: int) -> None:
        """Sequential requests, every ``refresh`` layers: the gradient of the targets of ``layer`` and the
        layers up to the next refresh, on the model as it is now."""
        for obj, request, mine in self.requests:
            k = max(1, request.refresh)
            here = {name: m for li, _, name, m in mine if layer <= li < layer + k}
            if request.sequential and layer % k == 0 and here:
                grad = score_gradient(self.model, request, here, self.spec, self.device)
                grad.layer = layer
                obj.receive_gradient(grad, None)
