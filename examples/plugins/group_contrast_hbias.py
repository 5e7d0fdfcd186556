"""Example third-party objective: an H_bias that is not built from pairs.

Fair-GPTQ's term needs minimal pairs (the same sentence with the group swapped).  Many
bias resources are not paired: sentences about one group and, separately, sentences
about another (posts, stories, descriptions).  This objective uses what such sets do
give: at every targeted module it takes the mean input activation over group A's
sentences and over group B's, and penalises the output change along their difference

    H_bias = 2α · d dᵀ,   d = mean_A(x) − mean_B(x)   (per-sentence means, pad tokens excluded)

so the quantized layer is pushed to map both groups' average inputs alike (the rank-one
analogue of the pair term, α‖Ŵ d‖²).  The groups need not have the same size or
sentences in common.  By default their sentences also build H (``calibrate_with_texts``).

It lives outside the package, registers through the same hook as the built-ins, and
declares its own settings model (``GroupContrastParams``: the shared targeting settings
plus its groups), which the pipeline schema checks ``params`` with and ``fairgptq plugins``
lists:

    plugins: [group_contrast_hbias]            # importable module (PYTHONPATH)
    objectives:
      - name: group_contrast
        params: {group_a_file: women.txt, group_b_file: men.txt, alpha: 0.1, layers: upper}

or from Python: ``Registry().register_module("group_contrast_hbias")``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from fairgptq.contract import Captured, ConfigError, TargetParams, TargetedObjective, TokenBatch, hookimpl, text_batches, validated

STREAMS = ("group_contrast:a", "group_contrast:b")


class GroupContrastParams(TargetParams):
    """The groups (inline sentences or one file each) and whether their sentences build H, plus targeting."""

    group_a: list[str] | None = None
    group_b: list[str] | None = None
    group_a_file: str | None = None
    group_b_file: str | None = None
    calibrate_with_texts: bool = True

    def builds_hessian(self) -> bool:  # the pipeline asks this; it never reads calibrate_with_texts itself
        return self.calibrate_with_texts


class GroupContrastObjective(TargetedObjective):
    """α‖Ŵ(mean_A x − mean_B x)‖² for the targeted modules, from two unpaired groups of sentences."""

    name = "group_contrast"
    Params = GroupContrastParams

    def __init__(self, *, batch_size: int = 16, max_length: int = 128, **settings: Any) -> None:
        self.params = p = validated(GroupContrastParams, settings, "objective group_contrast")
        self.groups = (_sentences(p.group_a, p.group_a_file, "a"), _sentences(p.group_b, p.group_b_file, "b"))
        self.settings = p.settings()
        self.batch_size, self.max_length = batch_size, max_length

    def streams(self, tokenizer) -> dict[str, list[TokenBatch]]:
        if tokenizer is None:
            raise ConfigError("group_contrast needs the model's tokenizer (pass tokenizer= to quantize_model)")
        return {name: text_batches(tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length)
                for name, texts in zip(STREAMS, self.groups)}

    def term(self, layer: int, role: str, inputs: dict[str, list[Captured]]) -> torch.Tensor | None:
        alpha = self.strength(layer, role)  # α of (layer, role), resolved once by applies() with the depth
        if alpha == 0:
            return None
        d = _mean_sentence_input(inputs[STREAMS[0]]) - _mean_sentence_input(inputs[STREAMS[1]])
        return (2.0 * alpha) * torch.outer(d, d)

    def describe(self) -> dict:
        settings = self.params.model_dump(exclude={"group_a", "group_b"})  # the sentences are counted, not copied
        return {"name": self.name, "group_a": len(self.groups[0]), "group_b": len(self.groups[1]), **settings}


def _sentences(texts: Sequence[str] | None, path: str | None, which: str) -> list[str]:
    if (texts is None) == (path is None):
        raise ConfigError(f"group_contrast: give group_{which} (a list of sentences) or group_{which}_file, one of them")
    if path is not None:
        texts = Path(path).read_text(encoding="utf-8").splitlines()
    kept = [t.strip() for t in texts if t.strip()]
    if not kept:
        raise ConfigError(f"group_contrast: group {which} has no sentences")
    return kept


def _mean_sentence_input(captured: list[Captured]) -> torch.Tensor:
    """Mean over sentences of each sentence's mean input vector (float32; long sentences do not dominate)."""
    total, count = None, 0
    for c in captured:
        m = c.mask.to(torch.float32).unsqueeze(-1)
        per_sentence = (c.x.to(torch.float32) * m).sum(1) / m.sum(1).clamp_min(1.0)
        total = per_sentence.sum(0) if total is None else total + per_sentence.sum(0)
        count += per_sentence.shape[0]
    return total / count


@hookimpl
def fairgptq_objectives():
    return {"group_contrast": GroupContrastObjective}
