"""Architectures own their layout, and a plugin adds a family (examples/plugins/phi_architecture.py).

The example registers Phi, which fairgptq does not ship, through the ``fairgptq_architectures``
hook, by module name like any third-party plugin.  Tiny random models: this checks the contract
(the driver finds the family, quantizes every role's linears in place), not quality.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairgptq import QuantConfig, quantize_model
from fairgptq.core.architectures import ArchSpec, arch_for
from fairgptq.core.errors import PluginError, UnsupportedArchitectureError
from fairgptq.core.objective import TokenBatch
from fairgptq.contract.hooks import hookimpl
from fairgptq.registry import Registry, default_registry

pytestmark = pytest.mark.usefixtures("one_thread")

PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"


def tiny_phi():
    from transformers import PhiConfig, PhiForCausalLM
    torch.manual_seed(0)
    cfg = PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=64)
    return PhiForCausalLM(cfg).eval()


def calibration():
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    return [TokenBatch(ids[:2], torch.ones_like(ids[:2])), TokenBatch(ids[2:], torch.ones_like(ids[2:]))]


@pytest.fixture
def phi_plugin(monkeypatch):
    """The example module registered in the process-wide registry (which arch_for reads), removed afterwards."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    registry = default_registry()
    registry.register_module("phi_architecture")
    yield registry
    registry.unregister("phi_architecture")


def test_without_the_plugin_phi_is_mapped_by_the_fallback_as_the_plugin_maps_it(phi_plugin):
    from fairgptq.core.architecture_inference import infer_spec
    plugin = phi_plugin.get("architectures", "phi").factory
    inferred = infer_spec(tiny_phi())
    assert (inferred.layers, inferred.roles, inferred.transposed) == (plugin.layers, plugin.roles, plugin.transposed)


def test_a_layout_the_fallback_cannot_map_is_refused_with_the_way_to_add_it():
    model = tiny_phi()
    for layer in model.model.layers:
        layer.mlp.proj_a, layer.mlp.proj_b = layer.mlp.fc1, layer.mlp.fc2
        del layer.mlp.fc1, layer.mlp.fc2
    with pytest.raises(UnsupportedArchitectureError, match="fairgptq_architectures") as ei:
        arch_for(model)
    assert "'phi'" in str(ei.value) and "mlp.proj_a (Linear), mlp.proj_b (Linear)" in str(ei.value)


def test_the_plugin_family_is_quantized_role_by_role(phi_plugin):
    info = phi_plugin.get("architectures", "phi")
    assert info.origin == "module phi_architecture"
    model = tiny_phi()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = quantize_model(model, calibration(), QuantConfig(bits=4, group_size=16), progress=False)
    roles = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense", "mlp.fc1", "mlp.fc2")
    assert sorted(result.qweights) == sorted(f"model.layers.{i}.{r}" for i in range(2) for r in roles)
    for name, qw in result.qweights.items():
        module = model.get_submodule(name)
        assert torch.equal(module.weight.data, qw.dequantize())  # written back in place
        assert not torch.equal(module.weight.data, before[f"{name}.weight"])
    assert torch.equal(model.model.embed_tokens.weight, before["model.embed_tokens.weight"])


def test_transposed_layout_reads_and_writes_out_in():
    conv = torch.nn.Module()
    conv.weight = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))  # stored (in=2, out=3)
    spec = ArchSpec(layers="h", roles={}, transposed=True)
    assert spec.weight_of(conv).shape == (3, 2)
    spec.set_weight(conv, torch.ones(3, 2) * 7)
    assert conv.weight.shape == (2, 3) and bool((conv.weight == 7).all())
    plain = ArchSpec(layers="h", roles={})
    assert plain.weight_of(conv).data_ptr() == conv.weight.data_ptr() and plain.weight_of(conv).shape == (2, 3)


def test_an_architecture_that_is_not_an_archspec_is_refused():
    class Broken:
        @hookimpl
        def fairgptq_architectures(self):
            return {"broken_lm": {"layers": "model.layers"}}

    reg = Registry(entry_points=False)
    with pytest.raises(PluginError, match="must be an ArchSpec"):
        reg.register(Broken(), name="broken_arch")
    assert "broken_lm" not in reg.architectures()


def test_shared_prefix_packing_follows_the_registered_family(phi_plugin, monkeypatch):
    """Scoring reads the registry, not the built-in table: a plugin family's ``tree_attention`` decides packing."""
    import dataclasses

    from fairgptq.evaluation.scoring import supports_packing
    model = tiny_phi()
    model.config._attn_implementation = "eager"
    assert not supports_packing(model)  # the example declares tree_attention=False
    packed = dataclasses.replace(phi_plugin.get("architectures", "phi").factory, tree_attention=True)
    monkeypatch.setattr("fairgptq.evaluation.scoring.architectures", lambda: {"phi": packed})
    assert supports_packing(model)
