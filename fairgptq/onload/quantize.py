"""Sequential onloading: quantize a causal LM one decoder layer at a time, straight from its shards.

1. The model is built on the meta device (accelerate's ``init_empty_weights``): no weights yet.
2. What runs before decoder layer 0 (embeddings; never the output head) is read from the
   checkpoint, the first layer's inputs are captured exactly as the in-memory driver does, and
   those tensors are written to the output and freed.
3. Each decoder layer is read from the shards when its turn comes, quantized by the in-memory
   driver's own per-layer step (:class:`fairgptq.core.driver.LayerQuantizer`), written as one
   shard of the GPTQ checkpoint, and returned to the meta device.
4. The output head is copied last, tensor by tensor.

Resident memory is one decoder layer (weights, Hessians, one batch's forward intermediates:
each batch's forward is restarted per role rather than paused, see
:class:`~fairgptq.core.layer_runs.RestartedRuns`), the
embeddings while the first inputs are captured, and the calibration activations up to the
budget (:class:`~fairgptq.onload.activations.ActivationStore`); the rest of the model stays on
disk.  The codes are those of :func:`fairgptq.core.driver.quantize_model` on the same model:
same step, same order, same inputs (``tests/test_onload.py`` compares checkpoints tensor by tensor).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from ..core.architectures import decoder_layers
from ..registry import arch_for
from ..core.backend import Backend
from ..export.regroup import group_size_for_widths
from ..core.driver import (LayerProgress, LayerQuantizer, QuantizationResult, capture_first_layer_inputs,
                           check_roles, prepare_streams)
from ..core.errors import ConfigError
from ..core.experts import DOWN, GATE_UP, check_expert_layers, is_routed_expert, routed_parts
from ..core.objective import Objective, TokenBatch
from ..core.quantizer import QuantConfig
from .activations import ActivationStore
from .memory import parse_size
from .expert_source import layer_tensor_reader
from .source import SafetensorsSource
from .writer import ShardedCheckpointWriter

# a layer's weights, its Hessians and factorisations, and its forward's intermediates: what the
# activation budget leaves room for, in multiples of the layer's weights
_LAYER_WORKING_FACTOR = 4


def _refuse_score_gradients(objectives: list[Objective], tokenizer) -> None:
    """An objective with a linear term needs a backward pass through every layer at once: not here yet."""
    needing = [o.name for o in objectives if o.needs_gradients()]
    if needing:
        raise ConfigError(f"objective(s) {needing} need gradients of a score through the whole model, and a "
                          f"sequential onloaded run holds one decoder layer at a time, so it cannot take them yet; "
                          f"quantize in memory (model.onload: never, with enough max_memory) or leave the "
                          f"objective out")


@dataclass
class OnloadResult:
    """The run's record (``result.qweights`` stays empty: every layer went to disk) and its memory figures."""

    result: QuantizationResult
    out_dir: Path
    quantize_config: dict
    layer_bytes: int
    activation_budget: int | None
    activations_held_bytes: int
    activations_spilled_bytes: int

    def memory(self) -> dict[str, Any]:
        return {"layer_bytes": self.layer_bytes, "activation_budget": self.activation_budget,
                "activations_held_bytes": self.activations_held_bytes,
                "activations_spilled_bytes": self.activations_spilled_bytes}


def empty_model(config, dtype: torch.dtype) -> nn.Module:
    """The skeleton of ``config``'s model on the meta device (buffers such as rotary frequencies are real)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # from_pretrained ties lm_head to the embeddings where the config says so; from_config not
    return model.eval()


def _set_tensor(root: nn.Module, key: str, value: torch.Tensor) -> None:
    """Put ``value`` in place of the parameter or buffer ``key`` (dotted, relative to ``root``)."""
    owner, _, attr = key.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[attr] = value


def _to_meta(root: nn.Module, keys: Iterable[str]) -> None:
    """Release the named tensors (their memory) by putting meta tensors of the same shape there."""
    for key in keys:
        owner, _, attr = key.rpartition(".")
        module = root.get_submodule(owner) if owner else root
        t = module._parameters.get(attr, module._buffers.get(attr))
        _set_tensor(root, key, torch.empty_like(t, device="meta"))


def saved_keys(model: nn.Module) -> list[str]:
    """State-dict keys as export_checkpoint saves them: a tied weight (lm_head = embeddings) once, first name."""
    every = dict(model.named_parameters(remove_duplicate=False))
    first = set(dict(model.named_parameters()))
    return [k for k in model.state_dict() if k not in every or k in first]


def _output_head_keys(model: nn.Module, keys: list[str]) -> list[str]:
    head = model.get_output_embeddings()
    if head is None:
        return []
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    own = {names[id(p)] for p in head.parameters()}
    return [k for k in keys if k in own]


def _read_all(source: SafetensorsSource, keys: Iterable[str], dtype: torch.dtype,
              where: str) -> dict[str, torch.Tensor]:
    missing = [k for k in keys if k not in source]
    if missing:
        raise ConfigError(f"{source.folder}: the checkpoint lacks {missing[:3]} ({len(missing)} tensor(s)) "
                                f"that the {where} needs; is it the checkpoint of this config.json's model?")
    return {k: source.read(k, dtype) for k in keys}


def _read_layer(read: Callable[[str, torch.dtype], torch.Tensor | None], source: SafetensorsSource,
                keys: Iterable[str], dtype: torch.dtype, where: str) -> dict[str, torch.Tensor]:
    """A decoder layer's tensors by the model's names, fused experts stacked from per-expert tensors."""
    out = {k: read(k, dtype) for k in keys}
    missing = [k for k, t in out.items() if t is None]
    if missing:
        raise ConfigError(f"{source.folder}: the checkpoint lacks {missing[:3]} ({len(missing)} tensor(s)) "
                          f"that the {where} needs; is it the checkpoint of this config.json's model?")
    return out


def _stored_key(name: str) -> str:
    """The state-dict key a quantized module's weight replaces: its ``.weight``, or a routed expert's fused tensor."""
    if is_routed_expert(name):
        owner, fused, _ = routed_parts(name)
        return f"{owner}.{fused}"
    return f"{name}.weight"


def _generation_config(folder: str | Path, model: nn.Module):
    """The checkpoint's generation_config.json when it has one (as from_pretrained reads it), else the default."""
    from transformers import GenerationConfig

    if (Path(folder) / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(folder)
    return getattr(model, "generation_config", None)


def quantize_onloaded(
    folder: str | Path,
    out_dir: str | Path,
    calibration: list[TokenBatch] | None,
    config: QuantConfig,
    *,
    objectives: Iterable[Objective] = (),
    tokenizer=None,
    dtype: torch.dtype = torch.float32,
    max_memory: str | int | None = None,
    roles: Iterable[str] | None = None,
    backend: Backend | None = None,
    checkpoint_format: str = "auto",
    fairgptq_meta: Mapping[str, Any] | None = None,
    spill_dir: str | Path | None = None,
    progress: bool = True,
    storage_dtype: torch.dtype | None = None,
) -> OnloadResult:
    """Quantize the safetensors checkpoint in ``folder`` layer by layer into a GPTQ checkpoint in ``out_dir``.

    Arguments as :func:`fairgptq.core.driver.quantize_model`, plus the compute ``dtype``,
    ``max_memory`` (bounds the calibration activations kept in memory: what exceeds
    ``max_memory`` minus room for one layer's work goes to memory-mapped files in ``spill_dir``)
    and the export's ``checkpoint_format`` / ``fairgptq_meta`` / ``storage_dtype`` (of the unquantized
    tensors; None: the compute ``dtype``).
    """
    source = SafetensorsSource(folder)
    from transformers import AutoConfig

    model = empty_model(AutoConfig.from_pretrained(folder), dtype)
    spec = arch_for(model)
    layers = decoder_layers(model, spec)
    if spec.experts:
        check_expert_layers(layers, spec)
    read_layer = layer_tensor_reader(source, model, spec)
    objectives = list(objectives)
    _refuse_score_gradients(objectives, tokenizer)
    quant_roles = check_roles(spec, roles)
    streams, hessian_streams = prepare_streams(calibration, objectives, tokenizer)
    backend = backend or Backend("cpu")  # the layers are read onto the CPU
    step = LayerQuantizer(spec, config, len(layers), quant_roles, hessian_streams, objectives, backend,
                          restart_forwards=True)

    keys = saved_keys(model)
    prefix = spec.layers + "."
    head = _output_head_keys(model, keys)
    front = [k for k in keys if not k.startswith(prefix) and k not in head]
    layer_keys = [[k.removeprefix(f"{prefix}{li}.") for k in keys if k.startswith(f"{prefix}{li}.")]
                  for li in range(len(layers))]
    layer_bytes = max(sum(p.numel() for p in layer.parameters()) for layer in layers) * \
        torch.empty((), dtype=dtype).element_size()
    budget = None
    if max_memory is not None:
        budget = max(parse_size(max_memory) - _LAYER_WORKING_FACTOR * layer_bytes, 0)
    widths = {int(spec.weight_of(layer.get_submodule(sub)).shape[1])
              for layer in layers for role in quant_roles for sub in spec.roles.get(role, ())}
    widths |= {int(getattr(layer.get_submodule(p), fused).shape[2]) for layer in layers for p in spec.experts
               for fused, role in ((GATE_UP, "mlp_in"), (DOWN, "mlp_out")) if role in quant_roles}
    writer = ShardedCheckpointWriter(out_dir, checkpoint_format=checkpoint_format, sym=config.sym,
                                     stored_group=group_size_for_widths(widths, config.group_size),
                                     storage_dtype=storage_dtype)

    t0 = time.perf_counter()
    reports = []
    store = ActivationStore(budget, spill_dir)
    with store, torch.no_grad(), backend.activate(), \
            LayerProgress(progress, len(layers)) as advance:
        front_tensors = _read_all(source, front, dtype, "embeddings")
        for k, t in front_tensors.items():
            _set_tensor(model, k, t)
        states = {s: capture_first_layer_inputs(model, layers, b, torch.device("cpu")) for s, b in streams.items()}
        store.hold(states)
        writer.write_plain("model-rest.safetensors", front_tensors)
        del front_tensors
        _to_meta(model, front)
        for li, layer in enumerate(layers):
            for k, t in _read_layer(read_layer, source, [prefix + f"{li}." + k for k in layer_keys[li]], dtype,
                                    f"decoder layer {li}").items():
                _set_tensor(layer, k.removeprefix(f"{prefix}{li}."), t)
            layer_q, layer_r = step.quantize_layer(li, layer, states)
            store.hold(states)
            quantized = {_stored_key(name).removeprefix(f"{prefix}{li}.") for name in layer_q}
            plain = {prefix + f"{li}." + k: t for k, t in layer.state_dict().items()
                     if k in layer_keys[li] and k not in quantized}
            writer.write_layer(li, layer_q, plain)
            reports.extend(layer_r)
            del layer_q, plain
            _to_meta(layer, layer_keys[li])
            advance(li)
        if head:
            writer.write_plain("model-head.safetensors", _read_all(source, head, dtype, "output head"))
    result = QuantizationResult({}, reports, config, time.perf_counter() - t0, [o.describe() for o in objectives])
    qc = writer.finish(result, json.loads(model.config.to_json_string(use_diff=False)), tokenizer=tokenizer,
                       generation_config=_generation_config(folder, model), fairgptq_meta=fairgptq_meta)
    return OnloadResult(result, Path(out_dir), qc, layer_bytes, budget, store.held_bytes, store.spilled_bytes)
