"""The quantization grid (fairgptq.core.quantizer): what GPTQ's column loop rounds onto.

Each test states a property of the grid that the GPTQ checkpoint format and the
spec (section 2) rely on; each assertion fails if the grid code gets it wrong.
"""
from __future__ import annotations

import pytest
import torch

from fairgptq.core.errors import ConfigError
from fairgptq.core.quantizer import (
    QuantConfig,
    dequantize_values,
    fit_scale_zero,
    quantize_values,
    round_to_nearest,
)

pytestmark = pytest.mark.usefixtures("one_thread")


BITS = (2, 3, 4, 8)


def _grid(w: torch.Tensor, cfg: QuantConfig):
    scale, zero = fit_scale_zero(w, cfg)
    q = quantize_values(w, scale[:, None], zero[:, None], cfg.maxq)
    return scale, zero, q, dequantize_values(q, scale[:, None], zero[:, None])


def _weights(rows=16, cols=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * torch.rand(rows, 1, generator=g) * 3


# ----------------------------------------------------------------------------- config

def test_defaults_match_the_issue():
    cfg = QuantConfig()
    assert (cfg.bits, cfg.group_size, cfg.sym, cfg.act_order, cfg.static_groups, cfg.damp, cfg.block_size,
            cfg.mse) == (4, 128, True, True, True, 0.01, 128, False)   # static act-order (docs/quantizer.md)
    assert cfg.maxq == 15
    assert cfg.to_dict()["group_size"] == 128


# (settings written, resolved (act_order, static_groups, act_group_aware)): the default is static act-order;
# an order that is named wins over it and keeps its own static-groups default (dynamic grids)
COLUMN_ORDERS = [
    ({}, (True, True, False)),
    ({"act_group_aware": True}, (False, False, True)),
    ({"act_order": False}, (False, False, False)),
    ({"act_order": True}, (True, True, False)),
    ({"act_order": False, "static_groups": False, "act_group_aware": False}, (False, False, False)),
    ({"static_groups": False}, (True, False, False)),
    ({"act_group_aware": True, "static_groups": True}, (False, True, True)),
    ({"act_order": False, "static_groups": True}, (False, True, False)),
]


@pytest.mark.parametrize("written, resolved", COLUMN_ORDERS)
def test_column_order_resolves_to_static_act_order_unless_another_is_named(written, resolved):
    cfg = QuantConfig(**written)
    assert (cfg.act_order, cfg.static_groups, cfg.act_group_aware) == resolved
    assert all(type(getattr(cfg, k)) is bool for k in ("act_order", "static_groups", "act_group_aware"))
    assert QuantConfig(**cfg.to_dict()) == cfg   # a saved config resolves to itself (--reuse, hashing)
    assert hash(QuantConfig(**cfg.to_dict())) == hash(cfg)


def test_default_column_order_is_static_act_order():
    assert QuantConfig().column_order == "act_order" and QuantConfig().static_groups
    assert QuantConfig(act_group_aware=True).column_order == "group_aware"
    assert QuantConfig(act_order=False).column_order == "natural"


def test_naming_both_orders_is_still_refused():
    with pytest.raises(ConfigError, match="two different column orders"):
        QuantConfig(act_order=True, act_group_aware=True)


@pytest.mark.parametrize("written, resolved", COLUMN_ORDERS)
def test_yaml_schema_resolves_the_column_order_as_quantconfig_does(written, resolved):
    from fairgptq.pipeline.schema import QuantizationSpec
    spec = QuantizationSpec.model_validate(written)
    assert (spec.act_order, spec.static_groups, spec.act_group_aware) == resolved
    assert spec.model_dump() == QuantConfig(**written).to_dict()


@pytest.mark.parametrize("bits", BITS)
def test_supported_bits_accepted(bits):
    assert QuantConfig(bits=bits).maxq == 2**bits - 1


@pytest.mark.parametrize("kwargs, words", [
    ({"bits": 5}, "bits=5"),
    ({"bits": 1}, "bits=1"),
    ({"bits": 16}, "bits=16"),
    ({"group_size": -2}, "group_size"),
    ({"group_size": 64.0}, "group_size"),
    ({"damp": 0.0}, "damp"),
    ({"damp": -0.1}, "damp"),
    ({"damp": 1.5}, "damp"),
    ({"damp": float("nan")}, "damp"),
    ({"block_size": 0}, "block_size"),
])
def test_invalid_config_raises_config_error_naming_the_setting(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        QuantConfig(**kwargs)


def test_config_error_is_a_value_error():
    # the CLI maps FairGPTQError to exit 2; ordinary callers can catch ValueError
    with pytest.raises(ValueError):
        QuantConfig(bits=7)


def test_config_is_frozen():
    cfg = QuantConfig()
    with pytest.raises(Exception):
        cfg.bits = 8  # type: ignore[misc]


# ----------------------------------------------------------------------------- symmetric grid

@pytest.mark.parametrize("bits", BITS)
def test_symmetric_zero_is_half_range(bits):
    cfg = QuantConfig(bits=bits, sym=True)
    scale, zero, q, _ = _grid(_weights(), cfg)
    assert torch.all(zero == 2 ** (bits - 1))
    assert torch.all(scale > 0)
    assert q.min() >= 0 and q.max() <= 2**bits - 1
    assert torch.equal(q, q.round())


@pytest.mark.parametrize("bits", BITS)
def test_symmetric_range_covers_the_largest_magnitude(bits):
    cfg = QuantConfig(bits=bits, sym=True)
    w = _weights(seed=1)
    scale, zero, _, deq = _grid(w, cfg)
    amax = w.abs().max(dim=1).values
    # scale = 2 * amax / maxq: the grid spans [-amax, amax] (through 0)
    torch.testing.assert_close(scale, 2 * amax / cfg.maxq)
    # every weight inside the range rounds to within half a step (the top code may clip by < 1 step)
    err = (deq - w).abs()
    assert torch.all(err <= scale[:, None] * 1.0 + 1e-6)
    inside = w.abs() <= (amax[:, None] - scale[:, None])
    assert torch.all(err[inside] <= (scale[:, None].expand_as(w)[inside] / 2) + 1e-6)


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_zero_is_exactly_representable(sym, bits):
    """The range always includes 0, so exact zeros (pruned / dead weights) stay exactly 0."""
    cfg = QuantConfig(bits=bits, sym=sym)
    w = _weights(seed=2)
    w[3] = w[3].abs() + 0.5       # all-positive row: range must still be stretched to 0
    w[4] = -w[4].abs() - 0.5      # all-negative row
    w[:, ::5] = 0.0
    _, _, _, deq = _grid(w, cfg)
    assert torch.all(deq[:, ::5] == 0)


@pytest.mark.parametrize("sym", [True, False])
def test_all_zero_rows_get_a_nonzero_scale_and_stay_zero(sym):
    cfg = QuantConfig(bits=4, sym=sym)
    w = _weights(rows=6, seed=3)
    w[2] = 0.0
    w[5] = 0.0
    scale, zero, _, deq = _grid(w, cfg)
    assert torch.all(torch.isfinite(scale)) and torch.all(scale > 0)
    assert torch.all(deq[2] == 0) and torch.all(deq[5] == 0)
    assert torch.isfinite(deq).all()


# ----------------------------------------------------------------------------- asymmetric grid

@pytest.mark.parametrize("bits", BITS)
def test_asymmetric_codes_and_zero_in_range(bits):
    cfg = QuantConfig(bits=bits, sym=False)
    w = _weights(seed=4) + torch.linspace(-2, 2, 16)[:, None]   # skewed rows
    scale, zero, q, deq = _grid(w, cfg)
    assert q.min() >= 0 and q.max() <= 2**bits - 1
    assert torch.all(zero >= 0) and torch.all(zero <= 2**bits - 1)
    assert torch.equal(zero, zero.round())
    lo = torch.clamp(w.min(dim=1).values, max=0)
    hi = torch.clamp(w.max(dim=1).values, min=0)
    torch.testing.assert_close(scale, (hi - lo) / cfg.maxq)
    # the zero point shifts the range by at most half a step, so the error is at most one step
    assert torch.all((deq - w).abs() <= scale[:, None] + 1e-6)


def test_asymmetric_beats_symmetric_on_skewed_rows():
    w = torch.rand(8, 64, generator=torch.Generator().manual_seed(5)) + 0.1  # all positive
    e_sym = (_grid(w, QuantConfig(bits=3, sym=True))[3] - w).pow(2).sum()
    e_asym = (_grid(w, QuantConfig(bits=3, sym=False))[3] - w).pow(2).sum()
    assert e_asym < 0.6 * e_sym


@pytest.mark.parametrize("bits", BITS)
def test_more_bits_less_error(bits):
    w = _weights(seed=6)
    errs = [(_grid(w, QuantConfig(bits=b))[3] - w).pow(2).sum() for b in BITS]
    assert all(a > b for a, b in zip(errs, errs[1:]))


# ----------------------------------------------------------------------------- MSE scale search

def _p24(w, deq):
    return (deq - w).abs().pow(2.4).sum(dim=1)


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_mse_search_never_worse_than_minmax(sym, bits):
    w = _weights(rows=16, cols=64, seed=7)
    w[0, 0] = 25.0  # one outlier: shrinking the range should help this row
    base = _p24(w, _grid(w, QuantConfig(bits=bits, sym=sym))[3])
    mse_scale, _, _, mse_deq = _grid(w, QuantConfig(bits=bits, sym=sym, mse=True))
    mse = _p24(w, mse_deq)
    assert torch.all(mse <= base * (1 + 1e-6))
    assert torch.all(mse_scale > 0)


def test_mse_search_shrinks_the_range_of_gaussian_rows():
    """Gaussian rows at 3 bits: the |err|^2.4 optimum clips the tails, so the scale shrinks and the error drops."""
    w = torch.randn(4, 128, generator=torch.Generator().manual_seed(8))
    cfg0, cfg1 = QuantConfig(bits=3), QuantConfig(bits=3, mse=True)
    s0, s1 = fit_scale_zero(w, cfg0)[0], fit_scale_zero(w, cfg1)[0]
    assert torch.all(s1 < 0.95 * s0)
    assert torch.all(s1 >= 0.2 * s0 - 1e-6)          # the search never shrinks past its 0.8 limit
    assert torch.all(_p24(w, _grid(w, cfg1)[3]) < 0.95 * _p24(w, _grid(w, cfg0)[3]))


# ----------------------------------------------------------------------------- round to nearest

@pytest.mark.parametrize("group", [32, 48, -1])
def test_round_to_nearest_uses_per_group_grids(group):
    cfg = QuantConfig(bits=4, group_size=group)
    w = _weights(rows=8, cols=100, seed=9)   # 100 is not a multiple of 32 or 48: partial last group
    out = round_to_nearest(w, cfg)
    g = 100 if group <= 0 else group
    for start in range(0, 100, g):
        blk = w[:, start:start + g]
        assert torch.equal(out[:, start:start + g], _grid(blk, cfg)[3])
    # each group's values lie on at most 2^b levels per row
    for start in range(0, 100, g):
        for r in range(8):
            assert out[r, start:start + g].unique().numel() <= 16


def test_round_to_nearest_does_not_modify_input():
    w = _weights()
    w0 = w.clone()
    round_to_nearest(w, QuantConfig())
    assert torch.equal(w, w0)
