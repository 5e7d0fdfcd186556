"""The example objective plugin outside the package (examples/plugins/group_contrast_hbias.py).

It registers by module name, like any third-party plugin, and its H_bias (built from two
unpaired groups of sentences, not from pairs) changes exactly the modules it targets.
Tiny random model: this checks the plugin contract, not debiasing.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairgptq import QuantConfig, quantize_model
from fairgptq.core.errors import ConfigError
from fairgptq.registry import Registry

from tiny_model import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one BLAS thread is far faster on a busy CPU

PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"
WOMEN = ["she is a good doctor", "the woman was smart", "she was a kind teacher", "the woman is strong and kind"]
MEN = ["he is an engineer", "the man was very weak", "he is a lazy nurse"]


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    reg = Registry(entry_points=False)
    assert "group_contrast" not in reg.names("objectives")
    reg.register_module("group_contrast_hbias")
    return reg


def test_registers_by_module_name(registry):
    info = registry.get("objectives", "group_contrast")
    assert info.origin == "module group_contrast_hbias"
    assert "alpha=0.1" in info.parameters() and "group_a_file=None" in info.parameters()
    with pytest.raises(ConfigError, match="group_a"):
        registry.create("objectives", "group_contrast", group_b=MEN)


def test_changes_only_the_targeted_modules(registry, tmp_path):
    (tmp_path / "women.txt").write_text("\n".join(WOMEN) + "\n")
    make = lambda alpha: registry.create("objectives", "group_contrast", group_a_file=str(tmp_path / "women.txt"),
                                         group_b=MEN, alpha=alpha, layers=[1], roles=["attn_out", "mlp_out"])
    cfg = QuantConfig(bits=4, group_size=32)
    plain, tok = tiny_llama(layers=2)
    fair, _ = tiny_llama(layers=2)
    quantize_model(plain, None, cfg, objectives=[make(0.0)], tokenizer=tok, progress=False)
    result = quantize_model(fair, None, cfg, objectives=[make(5.0)], tokenizer=tok, progress=False)
    touched = {r.name for r in result.reports if r.delta_w_rel is not None}
    assert touched == {"model.layers.1.self_attn.o_proj", "model.layers.1.mlp.down_proj"}
    assert all(r.delta_w_rel > 0 for r in result.reports if r.name in touched)
    before, after = dict(plain.named_parameters()), dict(fair.named_parameters())
    for name in touched:
        assert not torch.equal(before[f"{name}.weight"], after[f"{name}.weight"]), name
    # everything quantized before the first targeted module saw the same H and no H_bias: identical
    for name, p in after.items():
        if name.startswith("model.layers.0.") or name.startswith("model.layers.1.self_attn.") and \
                name.split(".")[-2] in ("q_proj", "k_proj", "v_proj"):
            assert torch.equal(p, before[name]), name


def test_a_pipeline_checks_the_plugins_own_settings(monkeypatch):
    """The schema validates ``params`` with the plugin's GroupContrastParams: errors name the YAML path."""
    from fairgptq.pipeline.loading import PipelineError, validate
    from fairgptq.registry import default_registry
    monkeypatch.syspath_prepend(str(PLUGINS))
    raw = {"name": "gc", "plugins": ["group_contrast_hbias"], "model": {"name": "smollm2"},
           "calibration": {"pairs": {}},
           "objectives": [{"name": "group_contrast", "params": {"group_a": WOMEN, "group_b": MEN, "alpha": -1,
                                                                 "colour": "red"}}]}
    with pytest.raises(PipelineError) as e:
        validate(raw, environment=False)
    problems = dict(e.value.problems)
    assert problems["objectives[0].params"].startswith("unknown setting(s) ['colour'] of objective "
                                                       "'group_contrast'; its settings: alpha, roles")
    del raw["objectives"][0]["params"]["colour"]
    with pytest.raises(PipelineError) as e:
        validate(raw, environment=False)
    assert dict(e.value.problems)["objectives[0].params.alpha"] == "must be >= 0 (got -1)"
    raw["objectives"][0]["params"]["alpha"] = 0.2
    spec = validate(raw, environment=False)
    assert spec.objectives[0].params["alpha"] == 0.2 and spec.objectives[0].params["calibrate_with_texts"]
    # validation registered the plugin in the pipeline's own registry, not the process's
    assert default_registry().pm.get_plugin("group_contrast_hbias") is None
