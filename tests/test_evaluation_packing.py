"""Shared-prefix packing: the prefix tree itself, and packed scores equal to padded ones on every table architecture
that claims it (Gemma 2/3's sliding-window layers do not honour the packed masks, and say so)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from fairgptq.core.architectures import ARCHITECTURES
from fairgptq.core.errors import ConfigError, DataError
from fairgptq.evaluation import Request, score_requests
from fairgptq.evaluation.packing import batch_rows, pack_sequences, row_tensors
from fairgptq.evaluation.scoring import supports_packing
from tiny_families import dense_configs
from tiny_model import BareForward

VOCAB = 96
SEQUENCES = [(1, 5, 6, 7), (1, 5, 6, 8, 9), (1, 5), (1, 10, 11), (1, 5, 6, 7), (2, 3), (1, 5, 6, 8, 4, 4, 4)]


def _configs() -> dict:
    return dense_configs()  # its vocabulary is VOCAB


PACKED = sorted(kind for kind, spec in ARCHITECTURES.items() if spec.tree_attention)


def _model(kind: str, attn: str = "sdpa"):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(_configs()[kind], attn_implementation=attn).eval()


def _requests(seed: int = 0) -> list[Request]:
    """Pair-like requests (shared beginnings), multiple-choice-like ones (shared context), duplicates."""
    g = torch.Generator().manual_seed(seed)
    stems = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (3, 7, 12)]
    reqs = []
    for stem in stems:
        for _ in range(3):
            tail = torch.randint(3, VOCAB, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
            reqs.append(Request((0,), tuple(stem + tail)))           # a sentence after the prefix token
            reqs.append(Request(tuple([0] + stem), tuple(tail)))     # a continuation of the shared context
    return reqs + [reqs[0], Request((0,), (5,))]


def test_every_table_architecture_is_checked_here():
    claimed = {kind for kind, spec in ARCHITECTURES.items() if spec.tree_attention}
    assert claimed <= set(_configs())


# --- the prefix tree -------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_tokens", [1, 4, 9, 64])
def test_paths_spell_each_sequence_at_its_own_positions(max_tokens):
    rows = pack_sequences(SEQUENCES, max_tokens)
    seen = sorted(i for row in rows for i, _ in row.members)
    assert seen == list(range(len(SEQUENCES)))
    for row in rows:
        assert len(row) <= max_tokens or len(row.members) == 1  # only a lone long sequence overflows
        for i, path in row.members:
            assert [row.tokens[n] for n in path] == list(SEQUENCES[i])
            assert [row.depths[n] for n in path] == list(range(len(SEQUENCES[i])))
            assert [row.parents[n] for n in path] == [-1] + path[:-1]


def test_shared_prefixes_are_stored_once():
    (row,) = pack_sequences(SEQUENCES, 64)
    distinct = {s[:k] for s in SEQUENCES for k in range(1, len(s) + 1)}
    assert len(row) == len(distinct) == 13


def test_ancestor_mask_is_the_causal_mask_of_each_path():
    (row,) = pack_sequences(SEQUENCES, 64)
    allowed = row.ancestor_mask()
    for _, path in row.members:
        for d, node in enumerate(path):
            assert set(torch.nonzero(allowed[node]).flatten().tolist()) == set(path[:d + 1])


def test_row_tensors_pad_with_self_attention_only():
    rows = batch_rows(pack_sequences(SEQUENCES, 6), rows_per_batch=8)[0]
    ids, pos, mask = row_tensors(rows, torch.float32)
    assert [len(r) for r in rows] == sorted((len(r) for r in rows), reverse=True)
    short = len(rows[-1])
    assert ids.shape == pos.shape == (len(rows), len(rows[0]))
    assert mask.shape == (len(rows), 1, len(rows[0]), len(rows[0]))
    pad = mask[-1, 0, short:]
    if short < len(rows[0]):
        assert (pad == 0).sum() == len(rows[0]) - short  # each padding position sees itself only
    assert torch.isfinite(mask).all()


# --- packed scores equal padded scores -------------------------------------------------------------------

@pytest.mark.parametrize("kind", PACKED)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_scores_equal_padded_scores(kind, attn):
    model = _model(kind, attn)
    reqs = _requests()
    assert supports_packing(model)
    padded = [s.logprob for s in score_requests(model, reqs, batch_size=1, pack=False, progress=False)]
    for pack_tokens, batch in ((8, 3), (24, 2), (512, 4)):
        packed = score_requests(model, reqs, batch_size=batch, pack=True, pack_tokens=pack_tokens, progress=False)
        assert [s.n_tokens for s in packed] == [len(r.continuation) for r in reqs]
        assert [s.logprob for s in packed] == pytest.approx(padded, abs=1e-4)


def test_packing_is_the_default_where_supported():
    model = _model("llama")
    reqs = _requests(1)
    assert [s.logprob for s in score_requests(model, reqs, progress=False)] == pytest.approx(
        [s.logprob for s in score_requests(model, reqs, pack=True, progress=False)], abs=0)


def test_packing_refused_where_masks_are_not_honoured():
    model = _model("llama")
    wrapped = BareForward(model)
    assert not supports_packing(wrapped)
    with pytest.raises(ConfigError, match="pack=False"):
        score_requests(wrapped, _requests(), pack=True, progress=False)
    auto = score_requests(wrapped, _requests(), progress=False)  # falls back to padded rows
    ref = score_requests(model, _requests(), pack=True, progress=False)
    assert [s.logprob for s in auto] == pytest.approx([s.logprob for s in ref], abs=1e-4)


def test_bad_packing_arguments():
    model = _model("llama")
    with pytest.raises(ConfigError, match="pack_tokens"):
        score_requests(model, _requests(), pack_tokens=0, progress=False)
    with pytest.raises(DataError, match="context token"):
        score_requests(model, [Request((), (4, 5))], progress=False)
