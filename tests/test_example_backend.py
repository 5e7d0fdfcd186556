"""The example backend plugin outside the package (examples/plugins/pinned_channels_backend.py).

It registers by module name and overrides only the backend's keep-mask hook; the driver,
factorisation and GPTQ loop are fairgptq's.  Tiny random model: this checks the contract.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairgptq import QuantConfig, quantize_model
from fairgptq.core.errors import ConfigError, PluginError
from fairgptq.core.objective import TokenBatch
from fairgptq.registry import Registry

from tiny_model import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    reg = Registry(entry_points=False)
    reg.register_module("pinned_channels_backend")
    return reg


def test_the_listed_channels_stay_unrounded_in_every_module(registry):
    backend = registry.create("backends", "pinned_channels", channels=[3, 0])
    model, _ = tiny_llama()
    ids = torch.randint(0, 30, (4, 12), generator=torch.Generator().manual_seed(0))
    result = quantize_model(model, [TokenBatch(ids, torch.ones_like(ids))], QuantConfig(bits=4, group_size=16),
                            backend=backend, progress=False)
    assert result.qweights
    for name, qw in result.qweights.items():
        assert qw.outlier_idx.tolist() == [0, 3], name
        assert torch.equal(model.get_submodule(name).weight.data, qw.dequantize())


def test_bad_channels_are_refused_naming_the_backend(registry):
    with pytest.raises(PluginError, match="pinned_channels"):
        registry.create("backends", "pinned_channels", channels=[1], threds=2)
    with pytest.raises(ConfigError, match="channels="):
        registry.create("backends", "pinned_channels", channels=[])
