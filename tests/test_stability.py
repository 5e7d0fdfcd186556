"""Stability guards (spec section 5) with constructed matrices, and the Hessian accumulator.

Every path of ``inverse_cholesky_factor`` is driven by a matrix built for it: rank-deficient
(factors at the requested damping), mildly indefinite (needs escalation), badly indefinite
(needs the eigenvalue repair), non-finite (NonFiniteError naming the module), zero / negative
(HessianFactorizationError), huge dynamic range (finite result).  H is compared with a clone
after every call: the guard must never modify the caller's matrix.
"""
from __future__ import annotations

import pytest
import torch

from fairgptq.core import stability
from fairgptq.core.errors import FairGPTQError, HessianFactorizationError, NonFiniteError
from fairgptq.core.gptq import factor_hessian, quantize_weight, reconstruction_loss
from fairgptq.core.hessian import HessianAccumulator
from fairgptq.core.quantizer import QuantConfig, round_to_nearest
from fairgptq.core.stability import DAMP_ESCALATION, StabilityRecord, damp_schedule, inverse_cholesky_factor

MOD = "model.layers.7.self_attn.o_proj"


pytestmark = pytest.mark.usefixtures("one_thread")


def _with_spectrum(evals, seed=0) -> torch.Tensor:
    """Symmetric Q diag(evals) Qᵀ with a random orthogonal Q (so mean diag = mean eigenvalue)."""
    evals = torch.as_tensor(evals, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(evals), len(evals), generator=g, dtype=torch.float64))
    H = (Q * evals) @ Q.T
    return ((H + H.T) / 2).float()


def _factor(H, damp=0.01, module=MOD):
    """inverse_cholesky_factor, asserting that H comes back untouched."""
    H0 = H.clone()
    U, rec = inverse_cholesky_factor(H, damp, module=module)
    assert torch.equal(H, H0), "the guard modified the caller's H"
    return U, rec


def _inverse_of(H, damp_used):
    H64 = H.double()
    lam = damp_used * float(torch.diagonal(H64).mean())
    return torch.linalg.inv(H64 + lam * torch.eye(H.shape[0], dtype=torch.float64))


def _assert_is_factor(U, target, rtol=1e-3):
    U64 = U.double()
    assert torch.allclose(U64, torch.triu(U64)), "U must be upper triangular"
    torch.testing.assert_close(U64.T @ U64, target, rtol=rtol, atol=rtol * float(target.abs().max()))


# ----------------------------------------------------------------------------- schedule

def test_damp_schedule_escalates_from_the_request_and_caps_at_one():
    assert damp_schedule(0.01) == pytest.approx([0.01, 0.03, 0.1, 0.3, 1.0])
    assert damp_schedule(0.05) == pytest.approx([0.05, 0.15, 0.5, 1.0])   # 5.0 capped, duplicates dropped
    assert damp_schedule(1.0) == [1.0]
    assert len(damp_schedule(0.001)) == len(DAMP_ESCALATION)


# ----------------------------------------------------------------------------- the paths

def test_psd_full_rank_first_try():
    X = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    H = X @ X.T
    U, rec = _factor(H)
    assert (rec.attempts, rec.damp_used, rec.eigen_repair, rec.events) == (1, 0.01, False, [])
    assert not rec.repaired and rec.module == MOD and rec.damp_requested == 0.01
    _assert_is_factor(U, _inverse_of(H, 0.01))


def test_singular_rank_deficient_h_factors_at_requested_damping():
    X = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))   # rank 6 of 32: 26 zero eigenvalues
    H = 2 * X @ X.T
    assert int(torch.linalg.matrix_rank(H.double(), rtol=1e-5)) == 6
    assert float(torch.linalg.eigvalsh(H.double()).min()) < 1e-4   # singular up to float32 noise
    U, rec = _factor(H)
    assert rec.attempts == 1 and rec.damp_used == 0.01 and not rec.repaired
    assert torch.isfinite(U).all()
    _assert_is_factor(U, _inverse_of(H, 0.01))


def test_indefinite_h_escalates_damping_from_the_original():
    # eigenvalues 1 (x7) and -0.02: mean diag 0.8725, so λ = 0.0087 at damp 0.01 fails, 0.026 at 0.03 works
    H = _with_spectrum([1.0] * 7 + [-0.02])
    assert bool(torch.linalg.cholesky_ex(H.double() + 0.01 * 0.8725 * torch.eye(8, dtype=torch.float64)).info != 0)
    U, rec = _factor(H)
    assert rec.attempts == 2 and rec.damp_used == pytest.approx(0.03) and rec.damp_used > rec.damp_requested
    assert not rec.eigen_repair and rec.repaired
    assert len(rec.events) == 1 and "damping raised 0.01 -> 0.03" in rec.events[0]
    # U factors (H + 0.03·mean I)^-1 of the ORIGINAL H: damping did not accumulate (0.01 + 0.03) in place
    _assert_is_factor(U, _inverse_of(H, 0.03))
    with pytest.raises(AssertionError):
        _assert_is_factor(U, _inverse_of(H, 0.04))


def test_badly_indefinite_h_needs_the_eigenvalue_repair():
    # eigenvalue -5 against mean diag 0.25: even λ = 1.0 · mean cannot lift it
    H = _with_spectrum([1.0] * 7 + [-5.0])
    U, rec = _factor(H)
    assert rec.eigen_repair and rec.repaired
    assert rec.attempts == len(damp_schedule(0.01)) + 1
    assert any("eigenvalue repair" in e for e in rec.events)
    assert torch.isfinite(U).all()
    U64 = U.double()
    assert bool((torch.linalg.eigvalsh(U64.T @ U64) > 0).all())
    # the repair works on the clipped spectrum: 7 eigenvalues 1, the negative one raised to the floor
    evals = torch.tensor([1.0] * 7 + [-5.0], dtype=torch.float64)
    floor = float(evals.max()) * stability.EIG_FLOOR
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    H_rep = (Q * evals.clamp(min=floor)) @ Q.T
    _assert_is_factor(U, _inverse_of(H_rep, 0.01), rtol=1e-3)


def test_repaired_h_quantizes_and_records_it():
    H = _with_spectrum([1.0] * 31 + [-20.0], seed=2) * 10
    W = torch.randn(8, 32, generator=torch.Generator().manual_seed(3))
    H0, W0 = H.clone(), W.clone()
    qw = quantize_weight(W, H, QuantConfig(bits=4, group_size=16), module=MOD)
    assert torch.equal(H, H0) and torch.equal(W, W0)
    assert qw.stability.eigen_repair and qw.stability.module == MOD
    assert torch.isfinite(qw.dequantize()).all()


def test_escalation_is_recorded_per_module_and_events_are_not_shared():
    H = _with_spectrum([1.0] * 15 + [-0.02], seed=4)
    W = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    fh = factor_hessian(H, 0.01, module="layers.0.q_proj")
    a = quantize_weight(W, H, QuantConfig(group_size=8, act_order=False), module="layers.0.q_proj", factored=fh)
    b = quantize_weight(W, H, QuantConfig(group_size=8, act_order=False), module="layers.0.k_proj", factored=fh)
    assert a.stability.attempts == 2 and a.stability.damp_used == pytest.approx(0.03)
    assert (a.stability.module, b.stability.module) == ("layers.0.q_proj", "layers.0.k_proj")
    a.stability.events.append("fair update: something")
    assert b.stability.events == fh.record.events and len(b.stability.events) == 1
    d = a.stability.to_dict()
    assert d["attempts"] == 2 and d["module"] == "layers.0.q_proj" and isinstance(d["events"], list)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_hessian_is_reported_by_module(bad):
    X = torch.randn(8, 16, generator=torch.Generator().manual_seed(6))
    H = X @ X.T
    H[2, 5] = bad
    H0 = H.clone()
    with pytest.raises(NonFiniteError, match=f"{MOD}.*Hessian.*NaN/Inf"):
        inverse_cholesky_factor(H, 0.01, module=MOD)
    with pytest.raises(NonFiniteError, match=MOD):
        quantize_weight(torch.randn(4, 8), H, QuantConfig(group_size=8), module=MOD)
    assert torch.equal(H.nan_to_num(), H0.nan_to_num())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_is_reported_by_module(bad):
    X = torch.randn(8, 16, generator=torch.Generator().manual_seed(7))
    W = torch.randn(4, 8)
    W[1, 3] = bad
    with pytest.raises(NonFiniteError, match=f"{MOD}: the weight contains 1 NaN/Inf"):
        quantize_weight(W, X @ X.T, QuantConfig(group_size=8), module=MOD)


def test_non_finite_activations_are_reported_by_module():
    acc = HessianAccumulator(8)
    x = torch.randn(2, 5, 8)
    x[1, 2, 4] = float("nan")
    with pytest.raises(NonFiniteError, match=f"{MOD}: the calibration activations"):
        acc.add(x, torch.ones(2, 5), module=MOD)
    # a NaN at a pad position is excluded with the position, so it is no error
    mask = torch.ones(2, 5)
    mask[1, 2] = 0
    acc2 = HessianAccumulator(8)
    acc2.add(x, mask, module=MOD)
    assert torch.isfinite(acc2.hessian()).all()


def test_non_finite_error_is_a_fairgptq_error():
    assert issubclass(NonFiniteError, FairGPTQError) and issubclass(HessianFactorizationError, FairGPTQError)


def test_huge_dynamic_range_factors_and_quantizes():
    d = 64
    diag = torch.logspace(-8, 8, d, dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    C = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    corr = C @ C.T / (2 * d)
    s = diag.sqrt()
    H = (s[:, None] * corr * s[None, :]).float()      # diag from ~1e-8 to ~1e8, correlated
    U, rec = _factor(H)
    assert torch.isfinite(U).all()
    W = torch.randn(16, d, generator=torch.Generator().manual_seed(9))
    H0 = H.clone()
    cfg = QuantConfig(bits=4, group_size=32)
    qw = quantize_weight(W, H, cfg, module=MOD)
    assert torch.equal(H, H0)
    deq = qw.dequantize()
    assert torch.isfinite(deq).all()
    l_gptq = reconstruction_loss(W, deq, H)
    assert l_gptq <= reconstruction_loss(W, round_to_nearest(W, cfg), H) * 1.0001
    # plain diagonal version too (diag 1e-8 .. 1e8, no correlation)
    Hd = torch.diag(diag).float()
    _, rec = _factor(Hd)
    assert rec.attempts == 1


def test_all_zero_hessian_is_a_factorization_error():
    H = torch.zeros(16, 16)
    with pytest.raises(HessianFactorizationError, match=f"{MOD}.*all zero.*calibration data reaches"):
        inverse_cholesky_factor(H, 0.01, module=MOD)
    # through the GPTQ entry point too: every column dead must not silently zero the weight
    with pytest.raises(HessianFactorizationError, match=f"{MOD}.*all zero"):
        quantize_weight(torch.randn(4, 16), H, QuantConfig(group_size=8), module=MOD)
    assert torch.equal(H, torch.zeros(16, 16))


def test_negative_hessian_is_a_factorization_error():
    with pytest.raises(HessianFactorizationError, match=f"{MOD}.*negative mean.*PSD"):
        inverse_cholesky_factor(-torch.eye(8), 0.01, module=MOD)


def test_nothing_works_error_names_module_damping_and_cause(monkeypatch):
    """For a finite symmetric H with positive mean diagonal the repair cannot fail: its largest
    eigenvalue is at least the mean diagonal, so the clipped spectrum has condition <= 1/EIG_FLOOR and
    float64 Cholesky succeeds.  The final error is reached here by making every factorisation fail."""
    calls = []

    def never(H64, lam):
        calls.append(lam)
        return None

    monkeypatch.setattr(stability, "_try_inverse_factor", never)
    H = _with_spectrum([1.0] * 7 + [-5.0])
    H0 = H.clone()
    with pytest.raises(HessianFactorizationError) as ei:
        inverse_cholesky_factor(H, 0.01, module=MOD)
    msg = str(ei.value)
    assert MOD in msg
    assert "[0.01, 0.03, 0.1, 0.3, 1.0]" in msg
    assert "eigenvalue repair" in msg and "Likely cause" in msg and "α" in msg and "calibration" in msg
    assert len(calls) == len(damp_schedule(0.01)) + 1
    assert torch.equal(H, H0)
    with pytest.raises(HessianFactorizationError, match="too few tokens"):
        inverse_cholesky_factor(H, 0.01, module=MOD, likely_cause="too few tokens")


def test_eigh_failure_is_reported_not_raised_raw(monkeypatch):
    def broken(*a, **k):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(stability.torch.linalg, "eigh", broken)
    H = _with_spectrum([1.0] * 7 + [-5.0])
    with pytest.raises(HessianFactorizationError, match=f"{MOD}.*eigh failed"):
        inverse_cholesky_factor(H, 0.01, module=MOD)


def test_record_can_be_passed_in_and_is_filled():
    rec = StabilityRecord()
    H = _with_spectrum([1.0] * 7 + [-0.02])
    _, out = inverse_cholesky_factor(H, 0.01, module=MOD, record=rec)
    assert out is rec and rec.module == MOD and rec.attempts == 2


# ----------------------------------------------------------------------------- Hessian accumulator

def test_accumulator_normalises_per_sentence():
    g = torch.Generator().manual_seed(10)
    a = torch.randn(2, 5, 6, generator=g)
    b = torch.randn(3, 4, 6, generator=g)
    acc = HessianAccumulator(6)
    acc.add(a)
    acc.add(b)
    assert acc.sentences == 5 and acc.tokens == 2 * 5 + 3 * 4
    expected = sum(x.T @ x for x in list(a) + list(b)) * (2.0 / 5)
    torch.testing.assert_close(acc.hessian(), expected, rtol=1e-5, atol=1e-5)
    # not per token: doubling every sentence's length (same rows twice) doubles H
    acc2 = HessianAccumulator(6)
    acc2.add(torch.cat([a, a], dim=1))
    acc_a = HessianAccumulator(6)
    acc_a.add(a)
    torch.testing.assert_close(acc2.hessian(), 2 * acc_a.hessian(), rtol=1e-5, atol=1e-5)


def test_accumulator_excludes_pad_positions():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 5, 8, generator=g)
    plain = HessianAccumulator(8)
    plain.add(x, torch.ones(3, 5))
    # same sentences with 4 extra right-pad positions holding garbage, masked out
    padded = torch.cat([x, 100 * torch.randn(3, 4, 8, generator=g)], dim=1)
    mask = torch.cat([torch.ones(3, 5), torch.zeros(3, 4)], dim=1)
    acc = HessianAccumulator(8)
    acc.add(padded, mask)
    assert acc.tokens == 15 and acc.sentences == 3
    assert torch.equal(acc.hessian(), plain.hessian())
    # left padding / holes too
    left = torch.cat([100 * torch.randn(3, 2, 8, generator=g), x], dim=1)
    lmask = torch.cat([torch.zeros(3, 2), torch.ones(3, 5)], dim=1)
    acc_l = HessianAccumulator(8)
    acc_l.add(left, lmask.bool())
    assert torch.equal(acc_l.hessian(), plain.hessian())
    # and the mask is honoured (without it, the garbage dominates)
    unmasked = HessianAccumulator(8)
    unmasked.add(padded)
    assert not torch.allclose(unmasked.hessian(), plain.hessian())


def test_accumulator_chunks_and_2d_input():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 50, 4, generator=g)
    big, small = HessianAccumulator(4), HessianAccumulator(4, chunk_tokens=7)
    big.add(x)
    small.add(x)
    torch.testing.assert_close(small.hessian(), big.hessian(), rtol=1e-5, atol=1e-5)
    one = HessianAccumulator(4)
    one.add(x[0])                      # (seq, dim): one sentence
    assert one.sentences == 1
    torch.testing.assert_close(one.hessian(), 2 * x[0].T @ x[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(HessianAccumulator(4).hessian(), torch.zeros(4, 4))


def test_all_padding_rows_are_not_counted_as_sentences():
    from fairgptq.core.hessian import HessianAccumulator

    torch.manual_seed(0)
    x = torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2] = False  # a row that is padding only
    acc, ref = HessianAccumulator(8), HessianAccumulator(8)
    acc.add(x, mask)
    ref.add(x[:2])
    assert acc.sentences == 2 and torch.equal(acc.hessian(), ref.hessian())
