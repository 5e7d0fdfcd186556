"""Checkpoint integrity: content hashes of every file that decides the model's outputs, and checks of the tensors.

A checkpoint with flipped bytes used to load silently with different logits, a NaN scale
gave exit 0 with ``likelihood_diff nan``, a truncated file, a missing ``qzeros`` or a
``g_idx`` out of range were tracebacks, and a swapped ``tokenizer.json`` (he/she exchanged)
moved CrowS-Pairs with exit 0.  Now:

- :func:`seal` puts, into ``quantize_config.json``'s ``fairgptq`` section at export, the
  content hash of every tensor file, of every tokenizer file and the chat template
  (:data:`TOKENIZER_FILES`: the ids a text becomes) and of the two configuration files that say
  how to read the tensors: ``config.json`` (the architecture: layers, widths) and
  ``quantize_config.json`` itself (bits, group size, format), hashed as canonical JSON without the
  integrity entry (``integrity: {"sha256": {tensor file: hex}, "tokenizer": {file: hex},
  "config_json": hex, "quantize_config": hex}``).
- :func:`verify_files` checks all of them at load.  A tokenizer file present but not recorded
  (added after export) is refused too.  A checkpoint fairgptq wrote (its quantizer, either config's
  ``meta`` or its README.md model card says so) without that record is refused: the record was
  removed, which is what tampering would do.  Checkpoints written elsewhere have no hashes and are
  loaded without this check (logged).  The user may load what cannot be verified on purpose:
  ``trust_unverified=True`` / ``--trust-unverified`` (``--no-verify`` is its older spelling).
- :func:`check_quantized_tensors` refuses, per module, missing parts, shapes that do not
  fit the bit width, group indices outside the scales, and non-finite scales (always, trusted or not).
"""
from __future__ import annotations

import hashlib
import logging
import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ..core.errors import FairGPTQError

logger = logging.getLogger("fairgptq.export")


class CheckpointIntegrityError(FairGPTQError):
    """A checkpoint's files or tensors are not what was exported (corruption, truncation, tampering)."""


#: the files besides tensors and configs that decide a model's outputs: how text becomes token ids (every
#: tokenizer format transformers writes or reads), the chat template, and the generation defaults
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json", "generation_config.json")
#: the template folder transformers 4.5x writes for extra named chat templates
CHAT_TEMPLATES_DIR = "additional_chat_templates"
#: what --trust-unverified / trust_unverified=True says in a refusal (one switch for every "cannot vouch")
TRUST_HINT = "or load it anyway with --trust-unverified (trust_unverified=True)"


def tokenizer_files(folder: str | Path) -> list[str]:
    """The :data:`TOKENIZER_FILES` present in ``folder`` and the extra chat templates, as paths relative to it."""
    folder = Path(folder)
    names = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    extra = folder / CHAT_TEMPLATES_DIR
    if extra.is_dir():
        names += sorted(f"{CHAT_TEMPLATES_DIR}/{f.name}" for f in extra.iterdir() if f.is_file())
    return names


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(folder: str | Path, names: list[str]) -> dict:
    """The tensor-file part of the ``integrity`` entry."""
    return {"sha256": {name: sha256_of(Path(folder) / name) for name in names}}


def json_hash(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces), so re-indenting a file changes nothing."""
    canonical = json.dumps(json.loads(json.dumps(obj, default=str)), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _without_integrity(qc: Mapping) -> dict:
    qc = json.loads(json.dumps(qc, default=str))
    (qc.get("meta", {}).get("fairgptq") or qc.get("fairgptq") or {}).pop("integrity", None)
    return qc


def seal(folder: str | Path, weight_files: list[str], quantize_config: dict, config: Mapping) -> None:
    """Write the ``integrity`` entry into ``quantize_config`` (its fairgptq section) before it is saved.

    Call it after the tokenizer (and generation config) are saved in ``folder``: their hashes are taken here."""
    entry = file_hashes(folder, weight_files)
    entry["tokenizer"] = {name: sha256_of(Path(folder) / name) for name in tokenizer_files(folder)}
    entry["config_json"] = json_hash(config)
    entry["quantize_config"] = json_hash(_without_integrity(quantize_config))
    quantize_config["meta"]["fairgptq"]["integrity"] = entry


def written_by_fairgptq(quantize_config: Mapping | None, folder: str | Path | None = None) -> bool:
    """Whether fairgptq wrote a checkpoint: its quantize config, or config.json's copy, names fairgptq.

    Both are looked at, so that replacing one file's ``meta`` does not pass the checkpoint off as foreign.
    """
    configs = [quantize_config]
    if folder is not None:
        try:
            configs.append(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
                           .get("quantization_config"))
        except (OSError, ValueError, AttributeError):
            pass
    for qc in configs:
        meta = qc.get("meta") if isinstance(qc, Mapping) else None
        if isinstance(meta, Mapping) and ("fairgptq" in meta or any(
                str(q).startswith("fairgptq") for q in (meta.get("quantizer") or [] if isinstance(
                    meta.get("quantizer"), list) else [meta.get("quantizer")]))):
            return True
    return False


def card_names_fairgptq(folder: str | Path) -> bool:
    """Whether the folder's README.md is a fairgptq model card: its front matter's tags or its title say so."""
    try:
        text = (Path(folder) / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    if re.search(r"^#.*\bwith fairgptq\b", text, re.M | re.I):
        return True
    front = re.match(r"---\s*\n(.*?)\n---\s*$", text, re.S | re.M)
    try:
        tags = (yaml.safe_load(front.group(1)) or {}).get("tags") if front else None
    except (yaml.YAMLError, AttributeError):
        return False
    return isinstance(tags, list) and any(str(t).lower() == "fairgptq" for t in tags)


def verify_files(folder: str | Path, quantize_config: Mapping) -> None:
    """Compare every recorded hash (tensor files and both configs); raises :class:`CheckpointIntegrityError`."""
    meta = quantize_config.get("meta") if isinstance(quantize_config.get("meta"), Mapping) else {}
    record = meta.get("fairgptq") or quantize_config.get("fairgptq") or {}
    integrity = (record.get("integrity") if isinstance(record, Mapping) else None) or {}
    recorded = integrity.get("sha256") if isinstance(integrity, Mapping) else None
    if not isinstance(recorded, Mapping) or not recorded:
        if written_by_fairgptq(quantize_config, folder):
            raise CheckpointIntegrityError(
                f"{folder}: a fairgptq checkpoint without its integrity record (quantize_config.json's "
                f"meta.fairgptq.integrity was removed, or quantize_config.json itself), so its files cannot be "
                f"checked; re-export it, {TRUST_HINT}")
        if card_names_fairgptq(folder):
            raise CheckpointIntegrityError(
                f"{folder}: its README.md model card says fairgptq made it, but neither quantize_config.json nor "
                f"config.json carries fairgptq's record (meta.fairgptq with the files' hashes): it was removed, so "
                f"the files cannot be checked; re-export it, {TRUST_HINT}")
        logger.info("%s: no fairgptq content hashes recorded; files not verified", folder)
        return
    _check_config_hashes(Path(folder), quantize_config, integrity)
    _check_hashes(Path(folder), recorded)
    _check_tokenizer(Path(folder), integrity.get("tokenizer"))


def _check_hashes(folder: Path, recorded: Mapping, *, missing: str = "the checkpoint is incomplete (copy it again, "
                  "or re-export it)", changed: str = "(quantize_config.json, fairgptq.integrity); the file was "
                  "modified or corrupted") -> None:
    """Every recorded file present with its recorded hash; ``missing`` / ``changed`` say what that means for it."""
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointIntegrityError(f"{path}: missing; {missing}")
        if sha256_of(path) != expected:
            raise CheckpointIntegrityError(f"{path}: content hash differs from the one recorded at export {changed}. "
                                           f"Re-export it, {TRUST_HINT}")


def _check_tokenizer(folder: Path, recorded: Any) -> None:
    """The tokenizer files and chat template as exported: none changed, none missing, none added.

    Exports older than this record (no ``tokenizer`` entry) are loaded with a warning: there is nothing to
    compare with."""
    if recorded is None:
        logger.warning("%s: exported before fairgptq recorded the tokenizer's hashes; its tokenizer files are not "
                       "verified", folder)
        return
    if not isinstance(recorded, Mapping):
        raise CheckpointIntegrityError(f"{folder}: quantize_config.json's fairgptq.integrity.tokenizer is not a "
                                       f"mapping of file to hash; the record was edited. Re-export it, {TRUST_HINT}")
    added = [n for n in tokenizer_files(folder) if n not in recorded]
    if added:
        raise CheckpointIntegrityError(
            f"{folder}: {', '.join(added)} added after export (not in the integrity record); a tokenizer file or "
            f"chat template decides the token ids the model sees. Remove it, re-export, {TRUST_HINT}")
    _check_hashes(folder, recorded, missing=f"the tokenizer was exported with it (re-export, {TRUST_HINT})",
                  changed=": the tokenizer or chat template was changed, so the same text would become other token ids")


def _check_config_hashes(folder: Path, quantize_config: Mapping, integrity: Mapping) -> None:
    """config.json and quantize_config.json as exported (exports before these hashes existed skip it)."""
    problems = []
    if "quantize_config" in integrity and json_hash(_without_integrity(quantize_config)) != integrity["quantize_config"]:
        problems.append("quantize_config.json (bits, group size, format: how the tensors are read)")
    if "config_json" in integrity:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
        if config is None or json_hash(config) != integrity["config_json"]:
            problems.append("config.json (the architecture: layers, widths)")
    if problems:
        raise CheckpointIntegrityError(
            f"{folder}: {' and '.join(problems)} changed since export (their hashes are in quantize_config.json, "
            f"fairgptq.integrity); the checkpoint would be read wrongly. Re-export it, {TRUST_HINT}")


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
    if scales.numel() and not bool(scales.any()):
        raise CheckpointIntegrityError(f"{name}: every scale is 0, so the whole weight reads as 0; the checkpoint "
                                       f"is corrupted")


def check_plain_tensors(tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse an unquantized tensor that is non-finite, or a weight matrix that is all zero (1-D biases may be)."""
    for key, t in tensors.items():
        if not t.is_floating_point():
            continue
        if not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise CheckpointIntegrityError(f"{key}: {n} NaN/Inf value(s) in an unquantized tensor; the checkpoint is "
                                           f"corrupted")
        if t.dim() >= 2 and t.numel() and not bool(t.any()):
            raise CheckpointIntegrityError(f"{key}: the whole matrix is 0; the checkpoint is corrupted")
