"""The mechanistic fairness metric: how much of a held-out pair's input gap a quantized module passes on.

Fair-GPTQ minimises α‖Ŵ(X⁰ − X¹)‖² besides GPTQ's reconstruction loss, so the direct
measure of whether it did its job is that term on pairs it never saw.  For every measured
linear module m and held-out pairs p (stereotypical / anti-stereotypical sentences),
with D_p the difference of m's inputs in the *float* model (aligned as the objective
aligns them) and W the float weight:

    gap ratio(m) = Σ_p ‖Ŵ D_p‖² / Σ_p ‖W D_p‖²  =  tr(Ŵ G Ŵᵀ) / tr(W G Wᵀ),   G = Σ_p D_p D_pᵀ.

Plain GPTQ keeps it near 1 (rounding moves it a little either way); a working fairness
term pushes it below 1 on the modules it targets.  Unlike CrowS-Pairs, whose 1508 binary
choices move by about a point under GPTQ's rounding noise, this ratio averages over every
output channel and every held-out pair, so an effect shows above the noise where it exists.

Only G (in × in per module) is kept between the float pass and the quantized model, so the
float weights need not be copied: the denominators are taken before quantization.

On a mixture-of-experts model ``mlp_in`` / ``mlp_out`` measure every routed expert's matrix, with D
the difference of the expert's own inputs (zero where a token was routed elsewhere), the D the
objectives use there (docs/architectures.md, "Objectives on routed experts").
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from ..core.architectures import decoder_layers
from ..core.experts import expert_groups, read_weight, unfused_model
from ..registry import arch_for
from ..core.objective import Captured
from ..contract.pairs import Pair
from ..objectives.pair_activations import pair_differences, tokenize_pairs
from .progress import progress_bar


@dataclass
class _Module:
    name: str
    layer: int
    role: str
    gram: torch.Tensor  # G = Σ_p D_p D_pᵀ (in x in), float64
    float_gap: float    # tr(W G Wᵀ) of the float weight


def _gap(w: torch.Tensor, gram: torch.Tensor) -> float:
    return float(((w @ gram) * w).sum())


class PairGap:
    """Held-out pair gaps of a model's ``roles`` modules: built on the float model, measured on the quantized one."""

    def __init__(self, model: nn.Module, tokenizer, pairs: Sequence[Pair], roles: Iterable[str], *,
                 alignment: str = "aligned", batch_size: int = 32, max_length: int = 128,
                 progress: bool = True) -> None:
        self.spec = arch_for(model)
        self.roles = tuple(roles)
        self.n_pairs = len(pairs)
        layers = decoder_layers(model, self.spec)
        subs = [(li, role, sub) for li, layer in enumerate(layers) for role in self.roles
                for sub in self.spec.roles.get(role, ())]
        subs += [(li, role, sub) for li, layer in enumerate(layers) for role, (sub,) in expert_groups(layer, self.spec)
                 if role in self.roles]
        targets = [(li, role, f"{self.spec.layers}.{li}.{sub}") for li, role, sub in subs]
        self.n_layers = len(layers)
        grams = {name: None for _, _, name in targets}
        streams = tokenize_pairs(list(pairs), tokenizer, alignment=alignment, batch_size=batch_size,
                                 max_length=max_length)
        captured: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def fn(module, args):
                captured[name] = args[0].detach()
            return fn

        device = next(model.parameters()).device
        # only the decoder's activations matter: skip the vocabulary projection where the model allows
        extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        handles = []
        try:
            with torch.inference_mode(), unfused_model(layers, self.spec), \
                    progress_bar(len(streams.plans), "pair gap (float)", progress) as advance:
                # inside unfused_model every routed expert's matrix is a module whose input a hook reads
                handles = [model.get_submodule(name).register_forward_pre_hook(hook(name)) for _, _, name in targets]
                for b0, b1, plan in zip(streams.stereo, streams.anti, streams.plans):
                    model(input_ids=b0.input_ids.to(device), attention_mask=b0.attention_mask.to(device), **extra)
                    x0 = dict(captured)
                    model(input_ids=b1.input_ids.to(device), attention_mask=b1.attention_mask.to(device), **extra)
                    for name in grams:
                        d = pair_differences(Captured(x0[name], b0.attention_mask), Captured(captured[name],
                                                                                              b1.attention_mask), plan)
                        d = d.double().cpu()
                        grams[name] = d.T @ d if grams[name] is None else grams[name].addmm_(d.T, d)
                    advance(1)
        finally:
            for h in handles:
                h.remove()
        self.modules = [_Module(name, li, role, grams[name], _gap(read_weight(model, self.spec, name).double(),
                                                                  grams[name]))
                        for li, role, name in targets if grams[name] is not None]

    def measure(self, model: nn.Module, targeted: Callable[[int, str], bool] = lambda layer, role: False) -> dict:
        """Per-module ratios on ``model`` (the same architecture, quantized) and pooled summaries.

        ``targeted(layer, role)`` marks the modules the fairness term was applied to, so the
        summary can pool them apart from the rest.
        """
        modules = {}
        for m in self.modules:
            q = _gap(read_weight(model, self.spec, m.name).double(), m.gram)
            modules[m.name] = {"layer": m.layer, "role": m.role, "targeted": bool(targeted(m.layer, m.role)),
                               "float": m.float_gap, "quantized": q,
                               "ratio": q / m.float_gap if m.float_gap > 0 else math.nan}
        return {"pairs": self.n_pairs, "roles": list(self.roles), "modules": modules,
                **summarize_gaps(modules)}


def pooled_ratio(modules: dict[str, dict], names: Iterable[str]) -> float | None:
    """Σ quantized gap / Σ float gap over ``names`` (None when the set is empty)."""
    names = [n for n in names if n in modules]
    den = math.fsum(modules[n]["float"] for n in names)
    return math.fsum(modules[n]["quantized"] for n in names) / den if names and den > 0 else None


def summarize_gaps(modules: dict[str, dict]) -> dict:
    """Pooled ratios over all measured modules, the targeted ones and the rest."""
    targeted = [n for n, m in modules.items() if m["targeted"]]
    return {"ratio_all": pooled_ratio(modules, modules),
            "ratio_targeted": pooled_ratio(modules, targeted),
            "ratio_untargeted": pooled_ratio(modules, [n for n in modules if n not in targeted]),
            "n_targeted": len(targeted)}
