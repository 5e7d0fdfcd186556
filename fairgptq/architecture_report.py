"""What fairgptq would do with a model's modules (``fairgptq inspect``), and the supported-families table.

``inspect`` builds the model's skeleton on the meta device (no weights read, so a 70B folder
costs nothing), looks its family up like a run does (the registry, then the module-name
fallback) and lists the spec in use: the decoder layers, each role's modules with their shapes
and fused slices, and every tensor kept in float.  :func:`families_table` is the table of
docs/architectures.md, printed from the registry (``fairgptq inspect --families``), so the page
cannot drift from the code (tests/test_architecture_families.py compares them).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn

from .core.arch_spec import ArchSpec
from .core.errors import FairGPTQError
from .model_loading import ModelNotFoundError
from .registry import Registry, default_registry


def model_skeleton(name: str) -> nn.Module:
    """A model to inspect: a folder's config.json, a transformers model type, or whatever load_model takes.

    Folders and model types are built on the meta device; a ``.gguf`` file, ``smollm2`` or a
    cached hub id are loaded (load_model's inputs), since only their loader knows the config.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from .model_loading import load_model
    from .onload.quantize import empty_model

    path = Path(name)
    if path.is_dir() and (path / "config.json").is_file():
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as e:  # transformers' own message says what is wrong with the file
            raise FairGPTQError(f"{path}/config.json: transformers cannot read it ({str(e).splitlines()[0]})") from None
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # a GPTQ checkpoint: inspect the model it quantizes
        return empty_model(config, None)
    if not path.exists() and name in CONFIG_MAPPING:
        return empty_model(AutoConfig.for_model(name), None)
    try:
        return load_model(name)[0]
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"{e} (inspect also takes a model folder with a config.json, or a transformers "
                                 f"model type such as qwen3)") from None


def spec_source(model: nn.Module, registry: Registry) -> tuple[ArchSpec, str]:
    """The spec a run would use, and where it comes from (built-in, a plugin, or inferred from names)."""
    from .registry import arch_for

    spec = arch_for(model, registry)
    model_type = getattr(model.config, "model_type", None)
    if model_type in registry.architectures():
        return spec, registry.get("architectures", model_type).origin
    return spec, "inferred from module names (no spec in the table)"


def _shape(module: nn.Module, spec: ArchSpec) -> tuple[int, ...]:
    return tuple(spec.weight_of(module).shape)


def describe(model: nn.Module, registry: Registry | None = None) -> dict:
    """The spec in use for ``model``: layers, roles, module names and shapes, what stays in float."""
    registry = registry or default_registry()
    spec, source = spec_source(model, registry)
    layers = model.get_submodule(spec.layers)
    layer = layers[0]
    roles = {role: [{"module": name, "shape_out_in": list(_shape(layer.get_submodule(name), spec)),
                     **({"fused": list(spec.fused[name])} if name in spec.fused else {})}
                    for name in names] for role, names in spec.roles.items()}
    quantized = {f"{name}.weight" for _, name in spec.modules()}
    experts = [{"module": path, "experts": int(layer.get_submodule(path).gate_up_proj.shape[0]),
                "mlp_in": f"{path}.gate_up_proj[e]", "mlp_out": f"{path}.down_proj[e]",
                "shape_out_in": {"gate_up_proj": list(layer.get_submodule(path).gate_up_proj.shape[1:]),
                                 "down_proj": list(layer.get_submodule(path).down_proj.shape[1:])}}
               for path in spec.experts]
    fused_experts = {f"{e['module']}.{p}" for e in experts for p in ("gate_up_proj", "down_proj")}
    in_layer = [k for k, _ in layer.named_parameters() if k not in quantized and k not in fused_experts]
    prefix = spec.layers + "."
    outside = [k for k, _ in model.named_parameters() if not k.startswith(prefix)]
    per_layer = len(quantized) + 2 * sum(e["experts"] for e in experts)
    return {"model_type": getattr(model.config, "model_type", None), "class": type(model).__name__,
            "spec_source": source, "layers": spec.layers, "n_layers": len(layers), "roles": roles,
            "routed_experts": experts, "weights_stored_transposed": spec.transposed,
            "packed_scoring": spec.tree_attention, "quantized_per_layer": per_layer,
            "quantized_total": per_layer * len(layers), "float_per_layer": in_layer, "float_outside_layers": outside}


def render(info: dict) -> str:
    """``describe``'s record as the text ``fairgptq inspect`` prints."""
    lines = [f"{info['class']} (model_type {info['model_type']!r}); spec: {info['spec_source']}",
             f"decoder layers: {info['layers']} ({info['n_layers']})"]
    for role, mods in info["roles"].items():
        for m in mods:
            fused = f"  fused: {' | '.join(m['fused'])}" if "fused" in m else ""
            lines.append(f"  {role:<9} {m['module']:<40} {m['shape_out_in'][0]} x {m['shape_out_in'][1]}{fused}")
    for e in info["routed_experts"]:
        shapes = e["shape_out_in"]
        lines.append(f"  mlp_in    {e['mlp_in']:<40} {shapes['gate_up_proj'][0]} x {shapes['gate_up_proj'][1]}"
                     f"  fused: gate | up; each of {e['experts']} routed experts, H from its routed tokens")
        lines.append(f"  mlp_out   {e['mlp_out']:<40} {shapes['down_proj'][0]} x {shapes['down_proj'][1]}"
                     f"  each of {e['experts']} routed experts; exported per expert ({e['module']}.<e>.gate_proj / "
                     f"up_proj / down_proj)")
    lines.append(f"quantized: {info['quantized_per_layer']} matrices per layer, {info['quantized_total']} in all"
                 + ("; weights stored (in, out)" if info["weights_stored_transposed"] else ""))
    lines.append(f"kept in float, per layer: {', '.join(info['float_per_layer']) or 'nothing'}")
    lines.append(f"kept in float, outside the layers: {', '.join(info['float_outside_layers']) or 'nothing'}")
    return "\n".join(lines)


def families_table(registry: Registry | None = None) -> str:
    """The markdown table of every registered family, model types with one layout on one row."""
    registry = registry or default_registry()
    rows: dict[str, list[str]] = {}
    for model_type, spec in sorted(registry.architectures().items()):
        cells = [f"`{spec.layers}`"]
        routed = {"mlp_in": [f"`{p}.gate_up_proj[e]` (gate/up)" for p in spec.experts],
                  "mlp_out": [f"`{p}.down_proj[e]`" for p in spec.experts]}
        for role in ("attn_qkv", "attn_out", "mlp_in", "mlp_out"):
            cells.append(", ".join([f"`{n}`" + (f" ({'/'.join(spec.fused[n])})" if n in spec.fused else "")
                                    for n in spec.roles.get(role, ())] + routed.get(role, [])) or "-")
        notes = [registry.get("architectures", model_type).origin]
        if spec.experts:
            notes.append("routed experts per expert, router in float, exported per expert (GPTQModel's layout)")
        if spec.transposed:
            notes.append("Conv1D (in, out)")
        notes.append("packed scoring" if spec.tree_attention else "unpacked scoring")
        rows.setdefault(" | ".join([*cells, "; ".join(notes)]), []).append(f"`{model_type}`")
    head = ("| model_type | layers | attn_qkv | attn_out | mlp_in | mlp_out | notes |\n"
            "|---|---|---|---|---|---|---|")
    return "\n".join([head, *(f"| {', '.join(types)} | {row} |" for row, types in rows.items())]) + "\n"


def to_json(info: dict) -> str:
    return json.dumps(info, indent=2)
