"""The GPTQ checkpoint written while quantizing: one safetensors shard per decoder layer, as soon as it is final.

Same tensors, names and configuration files as :func:`fairgptq.export.export_checkpoint` (its
packing functions do the work), but sharded: ``model-layer-00000.safetensors`` ... plus
``model-rest.safetensors`` (embeddings, final norm, lm_head) and ``model.safetensors.index.json``,
the layout transformers, GPTQModel and vLLM read for large models.

The checkpoint format must be known before a layer's ``qzeros`` can be packed.  Symmetric grids
never have a zero point of 0, so ``auto`` is ``gptq`` (v1) from the start there; for asymmetric
grids under ``auto`` the zero points wait in memory (one small integer per group) until the last
layer says whether v1 can hold them, then go into ``model-qzeros.safetensors``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from ..core.driver import QuantizationResult
from ..core.experts import checkpoint_split
from ..core.gptq import QuantizedWeight
from ..export.integrity import seal
from ..export.gptq_format import (CHECKPOINT_FORMATS, QUANTIZE_CONFIG, at_checkpoint_precision, choose_format,
                                  make_shareable, outlier_counts, pack_weight, quantize_config)
from ..export.packing import pack_last
from ..export.regroup import regroup

INDEX = "model.safetensors.index.json"


class ShardedCheckpointWriter:
    """Writes shards into ``out_dir`` as they come and the index and configuration files at the end."""

    def __init__(self, out_dir: str | Path, *, checkpoint_format: str, sym: bool, stored_group: int,
                 storage_dtype: torch.dtype | None = None) -> None:
        self.out = Path(out_dir)
        self.storage_dtype = storage_dtype  # of the unquantized tensors; None: as they come
        self.group = stored_group  # the lossless consumer-friendly group size (fairgptq.export.regroup)
        self.out.mkdir(parents=True, exist_ok=True)
        self.requested = checkpoint_format
        # resolved now where it can be: fixed by the user, or v1 for symmetric grids (zero = 2^(bits-1))
        self.format: str | None = checkpoint_format if checkpoint_format in CHECKPOINT_FORMATS else (
            "gptq" if sym else None)
        self.weight_map: dict[str, str] = {}
        self._pending_zeros: dict[str, QuantizedWeight] = {}
        self._zero_at_0 = False
        self.outliers: dict[str, int] = {}
        self.total_bytes = 0

    def write_plain(self, shard: str, tensors: dict[str, torch.Tensor]) -> None:
        """A shard of unquantized tensors (embeddings, norms, the output head), in the storage dtype."""
        self.write_shard(shard, self._stored(tensors))

    def _stored(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.storage_dtype is None:
            return dict(tensors)
        return {k: t.to(self.storage_dtype) if t.is_floating_point() else t for k, t in tensors.items()}

    def write_shard(self, shard: str, tensors: dict[str, torch.Tensor]) -> None:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(self.out / shard),
                  metadata={"format": "pt"})
        for k, v in tensors.items():
            self.weight_map[k] = shard
            self.total_bytes += v.numel() * v.element_size()

    def write_layer(self, index: int, qweights: Mapping[str, QuantizedWeight],
                    plain: Mapping[str, torch.Tensor]) -> None:
        """One decoder layer: its quantized linears (packed) and its other tensors (norms, biases)."""
        tensors = self._stored(plain)
        for module, whole in qweights.items():
            self.outliers.update(outlier_counts({module: whole}))  # by the quantized module's name, as export
            for name, qw in checkpoint_split(module, whole):  # a routed expert: its per-expert modules
                self._add(tensors, name, regroup(at_checkpoint_precision(qw, name), self.group, name))
        self.write_shard(f"model-layer-{index:05d}.safetensors", tensors)

    def _add(self, tensors: dict[str, torch.Tensor], name: str, snapped: QuantizedWeight) -> None:
        """One quantized linear's packed tensors (its qzeros held back while the format is undecided)."""
        if self.format is None:
            if choose_format({name: snapped}, "auto") == "gptq_v2":
                self._zero_at_0 = True
            self._pending_zeros[name] = snapped
            packed = pack_weight(snapped, "gptq")
            del packed["qzeros"]
        else:
            packed = pack_weight(snapped, choose_format({name: snapped}, self.format))
        tensors.update({f"{name}.{suffix}": t for suffix, t in packed.items()})

    def _write_pending_zeros(self) -> str:
        fmt = "gptq_v2" if self._zero_at_0 else "gptq"
        offset = 1 if fmt == "gptq" else 0
        zeros = {f"{name}.qzeros": pack_last(qw.zeros.to(torch.int64) - offset, qw.bits)
                 for name, qw in self._pending_zeros.items()}
        if zeros:
            self.write_shard("model-qzeros.safetensors", zeros)
        self._pending_zeros.clear()
        return fmt

    def finish(self, result: QuantizationResult, config: dict, *, tokenizer=None, generation_config=None,
               fairgptq_meta: Mapping[str, Any] | None = None) -> dict:
        """Index, quantize_config.json and config.json (as export_checkpoint writes them); returns quantize_config."""
        fmt = self.format or self._write_pending_zeros()
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        qc = quantize_config(result, fmt, dict(fairgptq_meta or {}), self.group, self.outliers)
        config = dict(config)
        if self.storage_dtype is not None:
            config["dtype"] = str(self.storage_dtype).removeprefix("torch.")
        config["quantization_config"] = {**qc, "meta": {k: v for k, v in qc["meta"].items() if k != "fairgptq"}}
        if generation_config is not None:
            generation_config.save_pretrained(self.out)
        if tokenizer is not None:
            tokenizer.save_pretrained(self.out)
        seal(self.out, sorted(set(self.weight_map.values())), qc, config)  # after the tokenizer: sealed too
        (self.out / QUANTIZE_CONFIG).write_text(json.dumps(qc, indent=2, default=str) + "\n")
        (self.out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        make_shareable(self.out)
        return qc
