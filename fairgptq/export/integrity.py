"""Checkpoint integrity: content hashes of the tensor files, and checks of what the tensors hold.

A checkpoint with flipped bytes used to load silently with different logits, a NaN scale
gave exit 0 with ``likelihood_diff nan``, and a truncated file, a missing ``qzeros`` or a
``g_idx`` out of range were tracebacks.  Now:

- :func:`file_hashes` goes into ``quantize_config.json``'s ``fairgptq`` section at export
  (``integrity: {"sha256": {file: hex}}``) and :func:`verify_files` checks it at load (skip
  with ``verify=False`` / ``fairgptq eval --no-verify``); checkpoints written elsewhere have no
  hashes and are loaded without this check (logged).
- :func:`check_quantized_tensors` refuses, per module, missing parts, shapes that do not
  fit the bit width, group indices outside the scales, and non-finite scales.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Mapping

import torch

from ..core.errors import FairGPTQError

logger = logging.getLogger("fairgptq.export")


class CheckpointIntegrityError(FairGPTQError):
    """A checkpoint's files or tensors are not what was exported (corruption, truncation, tampering)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(folder: str | Path, names: list[str]) -> dict:
    """The ``integrity`` entry for quantize_config.json's fairgptq section."""
    return {"sha256": {name: sha256_of(Path(folder) / name) for name in names}}


def verify_files(folder: str | Path, quantize_config: Mapping) -> None:
    """Compare every recorded tensor file's hash; raises :class:`CheckpointIntegrityError` on a mismatch."""
    record = quantize_config.get("meta", {}).get("fairgptq") or quantize_config.get("fairgptq") or {}
    recorded = record.get("integrity", {}).get("sha256")
    if not recorded:
        logger.info("%s: no fairgptq content hashes recorded; files not verified", folder)
        return
    for name, expected in recorded.items():
        path = Path(folder) / name
        if not path.is_file():
            raise CheckpointIntegrityError(f"{path}: missing; the checkpoint is incomplete")
        if sha256_of(path) != expected:
            raise CheckpointIntegrityError(
                f"{path}: content hash differs from the one recorded at export (quantize_config.json, fairgptq."
                f"integrity); the file was modified or corrupted. Re-export it, or load it anyway with "
                f"--no-verify (verify=False)")


def check_quantized_tensors(name: str, parts: Mapping[str, torch.Tensor], bits: int) -> None:
    """Refuse a quantized linear whose packed tensors cannot be (or should not be) unpacked."""
    missing = [s for s in ("qweight", "qzeros", "scales", "g_idx") if s not in parts]
    if missing:
        raise CheckpointIntegrityError(f"{name}: missing {', '.join(missing)}; not a complete GPTQ module")
    qweight, qzeros, scales, g_idx = (parts[s] for s in ("qweight", "qzeros", "scales", "g_idx"))
    per_int = 32 // bits
    if scales.dim() != 2 or qweight.dim() != 2 or qzeros.dim() != 2 or g_idx.dim() != 1:
        raise CheckpointIntegrityError(f"{name}: tensors have the wrong number of dimensions")
    n_groups, out = scales.shape
    if qweight.shape[0] * per_int < g_idx.numel() or qweight.shape[1] != out \
            or qzeros.shape[0] != n_groups or qzeros.shape[1] * per_int < out:
        raise CheckpointIntegrityError(
            f"{name}: shapes qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, scales "
            f"{tuple(scales.shape)}, g_idx {tuple(g_idx.shape)} do not fit {bits}-bit packing (does "
            f"quantize_config.json's bits match the file?)")
    if g_idx.numel() and (int(g_idx.min()) < 0 or int(g_idx.max()) >= n_groups):
        raise CheckpointIntegrityError(f"{name}: g_idx holds group indices outside 0..{n_groups - 1}")
    if not bool(torch.isfinite(scales.float()).all()):
        raise CheckpointIntegrityError(f"{name}: non-finite (NaN or Inf) scales; the checkpoint is corrupted")
