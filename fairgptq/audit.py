"""``fairgptq audit BASE QUANTIZED``: did quantization make this model more biased than its base, beyond noise?

Most people who run a 4-bit model did not quantize it.  The audit loads the base model and a
quantized version of it (a fairgptq export, any GPTQ checkpoint — GPTQModel's, AutoGPTQ's —, an
llm-compressor / compressed-tensors checkpoint, or another format that loads on the CPU in
transformers), scores both on the same items, and compares them item by item: each metric's
difference with its 95 % interval and test (:mod:`fairgptq.analysis.comparison`), per bias category too, a
forest plot, and a verdict in words.  A format that does not load here is refused with what would
load it.  Before anything is evaluated, every checkpoint is opened and verified and compared with the
base (same vocabulary and special tokens, same architecture and shapes, not the base itself): a
swapped tokenizer must never be reported as a bias quantization caused (docs/integrity.md).  Every
model computes in float32 on the CPU unless ``dtype`` says otherwise; audit.json records it.
"""
from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .analysis.comparison import compare_items, forest_plot, row_sentence
from .core.errors import ConfigError, FairGPTQError
from .evaluation.report import ideal_value, is_bias_metric, lower_is_better
from .outputs import write_file

#: quantization methods transformers cannot run on a CPU, and what does run them
NEEDS = {"awq": "AutoAWQ / GPTQModel's AWQ kernels on a CUDA GPU", "bitsandbytes": "bitsandbytes on a CUDA GPU",
         "fp8": "a GPU with FP8 support (or vLLM)", "exl2": "ExLlamaV2 on a CUDA GPU", "hqq": "HQQ on a GPU",
         "aqlm": "AQLM's kernels on a GPU", "eetq": "EETQ on a CUDA GPU", "quanto": "optimum-quanto",
         "torchao": "torchao"}
#: the item field that names a pair's bias category, by task
CATEGORY_FIELDS = ("bias_type", "domain", "category")


class QuantizedFormatError(FairGPTQError):
    """A quantized checkpoint in a format this machine cannot load (the message says what would)."""


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    description: str
    #: its parameters are plain float tensors with the base architecture's names (fairgptq's loaders), so every
    #: name and shape can be compared; a format loaded by transformers may replace modules with packed ones
    plain: bool = True


def load_for_audit(name: str, dtype: str | None = None, *, trust_unverified: bool = False) -> Loaded:
    """A float or quantized model by name: GPTQ folders through fairgptq's loader, other formats through transformers.

    Every GPTQ checkpoint's integrity record is checked (a stripped record of a fairgptq checkpoint is refused
    unless ``trust_unverified``); models compute in ``dtype``, float32 on the CPU by default."""
    from .model_loading import load_model
    from .export import is_gptq_checkpoint, load_gptq_checkpoint
    path = Path(name)
    if is_gptq_checkpoint(name):
        model, tok, qc = load_gptq_checkpoint(path, dtype=dtype, trust_unverified=trust_unverified)
        who = (qc.get("meta") or {}).get("quantizer") or ["unknown quantizer"]
        who = who if isinstance(who, list) else [str(who)]
        return Loaded(model, tok, f"GPTQ {qc['bits']}-bit g{qc['group_size']} ({', '.join(map(str, who))})")
    method = _quant_method(path)
    if method is None:
        model, tok = load_model(name, dtype or "float32")
        return Loaded(model, tok, "unquantized")
    return _load_with_transformers(path, method, dtype)


def _quant_method(path: Path) -> str | None:
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return None
    try:
        qc = json.loads(config.read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{config}: not readable JSON ({e})") from None
    if not isinstance(qc, dict):
        return None
    return str(qc.get("quant_method") or qc.get("format") or "unknown")


def _load_with_transformers(path: Path, method: str, dtype: str | None) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if method == "compressed-tensors" and importlib.util.find_spec("compressed_tensors") is None:
        raise QuantizedFormatError(f"{path}: a compressed-tensors (llm-compressor) checkpoint; loading it needs "
                                   f"the compressed-tensors package: pip install compressed-tensors")
    if method in NEEDS:
        raise QuantizedFormatError(f"{path}: quantization method {method!r} does not run on this machine's CPU in "
                                   f"transformers; it needs {NEEDS[method]}")
    try:  # computed in float32 on the CPU unless the user asks otherwise, whatever the checkpoint stores
        model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", dtype=getattr(torch, dtype or "float32")
                                                     ).eval()
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # a loader that refuses the CPU or lacks its kernel: say which format and why
        raise QuantizedFormatError(f"{path}: quantization method {method!r} did not load on the CPU in transformers "
                                   f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})"
                                   ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return Loaded(model, tok, f"{method} (loaded by transformers)", plain=False)


def verdict_words(row: dict) -> str:
    """'more biased' / 'less biased' / 'worse' / 'better' when significant, else 'not distinguishable from noise'.

    A bias score and its distance from parity carry the distance's verdict (``bias_verdict``, set by
    :func:`~fairgptq.comparison.compare_items`): less biased only when the distance shrank significantly."""
    if row.get("bias_verdict"):
        return row["bias_verdict"]
    if row.get("verdict") != "significant":
        return "not distinguishable from noise"
    key = f"{row.get('task', '')}.{row['metric']}"
    if is_bias_metric(key):  # a stereotype preference: further from its ideal (50) is more biased
        ideal = ideal_value(key)
        ideal = 50.0 if ideal is None else ideal
        return "more biased" if abs(row["b"] - ideal) > abs(row["a"] - ideal) else "less biased"
    better = row["diff"] < 0 if lower_is_better(key) else row["diff"] > 0
    return "better" if better else "worse"


def category_rows(task: str, base: list[dict], other: list[dict], *, n_boot: int, seed: int) -> list[dict]:
    """The task's first metric per bias category (the items' category field), each a paired comparison."""
    field = next((f for f in CATEGORY_FIELDS if base and f in base[0]), None)
    if field is None:
        return []
    groups_a: dict[str, list[dict]] = defaultdict(list)
    groups_b: dict[str, list[dict]] = defaultdict(list)
    for it in base:
        groups_a[str(it[field])].append(it)
    for it in other:
        groups_b[str(it[field])].append(it)
    rows = []
    for category in sorted(groups_a):
        first = compare_items(task, groups_a[category], groups_b.get(category, []), n_boot=n_boot, seed=seed,
                              labels=("base", "quantized"))[0]
        rows.append({**first, "category": category, "audit": verdict_words(first)})
    return rows


def audit(base: str, quantized: str, tasks: Iterable[str], *, out: str | Path | None = None, **kwargs: Any) -> dict:
    """Evaluate ``base`` and ``quantized`` on the same items and compare them; writes ``out`` when given."""
    return audit_all(base, [quantized], tasks, outs=None if out is None else [Path(out)], **kwargs)[0]


def audit_all(base: str, quantized: Sequence[str], tasks: Iterable[str], *, outs: Sequence[Path] | None = None,
              dtype: str | None = None, batch_size: int = 16, limit: int | None = None, n_boot: int = 2000,
              seed: int = 0, trust_unverified: bool = False, force: bool = False, **options: Any) -> list[dict]:
    """Several quantized versions of one base, each compared with it; the base is evaluated once.

    Evaluating the base is as costly as evaluating a checkpoint, so auditing three checkpoints of a
    model costs four evaluations here instead of six.  Everything that can be refused is refused before
    the first evaluation: the output folders, a checkpoint that is the base itself, every checkpoint's
    integrity (each is opened and verified), and the comparability of each with the base
    (:func:`comparability_problems`)."""
    tasks = list(tasks)
    if outs is not None:
        if len(outs) != len(quantized):
            raise ConfigError(f"{len(quantized)} quantized checkpoints but {len(outs)} output folders; give one each")
        from .outputs import output_folder
        # --out is a new or empty folder (with several checkpoints, so is the folder holding their subfolders),
        # all checked before any is made; ``force`` replaces an earlier audit's files
        holders = {Path(f).parent for f in outs} if len(outs) > 1 else set()
        for folder in [*holders, *map(Path, outs)]:
            if not force and folder.is_dir() and any(folder.iterdir()):
                clash = [n for n in AUDIT_OUTPUTS if (folder / n).exists()]
                held = f"already holds {', '.join(clash)}" if clash else "exists and is not empty"
                raise ConfigError(f"--out {folder}: the folder {held}; fairgptq does not replace a result: give a new "
                                  f"folder (or pass --force to replace an earlier audit's {', '.join(AUDIT_OUTPUTS)})")
        for folder in outs:
            output_folder(folder, AUDIT_OUTPUTS, force=force)
    for name in quantized:
        if _same_path(base, name):
            raise ConfigError(f"{name} is the base model's own folder: an audit compares a quantized model with its "
                              f"base, and a model against itself says nothing; give the quantized checkpoint")
    reference_model = load_for_audit(base, dtype, trust_unverified=trust_unverified)
    kept: list[Loaded | None] = []
    for name in quantized:  # open and verify every checkpoint before anything is evaluated
        loaded = load_for_audit(name, dtype, trust_unverified=trust_unverified)
        refuse_incomparable(reference_model, loaded, base, name)
        kept.append(loaded if len(quantized) == 1 else None)  # several: loaded again in turn, to bound memory
        del loaded
    settings = dict(batch_size=batch_size, limit=limit, options=options)
    reference = _evaluated(base, reference_model, tasks, **settings)
    del reference_model
    reports = []
    for i, name in enumerate(quantized):
        loaded = kept[i] or load_for_audit(name, dtype, trust_unverified=trust_unverified)
        kept[i] = None
        other = _evaluated(name, loaded, tasks, **settings)
        del loaded
        report = compare_with_base(reference, other, tasks, n_boot=n_boot, seed=seed)
        if outs is not None:
            write_audit(report, reference, other, Path(outs[i]))
        reports.append(report)
    return reports


AUDIT_OUTPUTS = ("audit.json", "audit.md", "forest.png", "base", "quantized")  # what write_audit puts in a folder


def _same_path(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    except OSError:
        return False


#: config fields that fix a model's shapes, under the names the supported families use
SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "n_embd", "n_layer", "n_head", "ffn_dim",
                "word_embed_proj_dim", "tie_word_embeddings")


def comparability_problems(base: Loaded, other: Loaded) -> list[str]:
    """Why two models cannot be audited item by item: another vocabulary or special tokens (the same text would be
    other token ids), another architecture or other shapes (not a quantized version of this base)."""
    problems = []
    va, vb = base.tokenizer.get_vocab(), other.tokenizer.get_vocab()
    if va != vb:
        moved = sorted(t for t in va.keys() & vb.keys() if va[t] != vb[t])
        only = len(va.keys() ^ vb.keys())
        example = f", e.g. {moved[0]!r} is {va[moved[0]]} in the base and {vb[moved[0]]} here" if moved else ""
        problems.append(f"the tokenizers' vocabularies differ ({len(va)} and {len(vb)} tokens; {len(moved)} with "
                        f"another id, {only} in one only{example})")
    sa, sb = _special_tokens(base.tokenizer), _special_tokens(other.tokenizer)
    if sa != sb:
        diff = sorted(k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k))
        problems.append("the special tokens differ (" + "; ".join(f"{k}: {sa.get(k)} vs {sb.get(k)}" for k in diff)
                        + ")")
    ca, cb = base.model.config, other.model.config
    fields = [f for f in SHAPE_FIELDS if getattr(ca, f, None) != getattr(cb, f, None)]
    if fields:
        problems.append("the architectures differ (" + "; ".join(
            f"{f}: {getattr(ca, f, None)} vs {getattr(cb, f, None)}" for f in fields) + ")")
    pa = {k: tuple(v.shape) for k, v in base.model.state_dict().items()}
    pb = {k: tuple(v.shape) for k, v in other.model.state_dict().items()}
    shapes = sorted(k for k in pa.keys() & pb.keys() if pa[k] != pb[k])
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) have other shapes, e.g. {shapes[0]} {pa[shapes[0]]} vs "
                        f"{pb[shapes[0]]}")
    if base.plain and other.plain and pa.keys() != pb.keys():
        names = sorted(pa.keys() ^ pb.keys())
        problems.append(f"{len(names)} tensor(s) are in one model only, e.g. {names[0]}")
    return problems


def _special_tokens(tok: Any) -> dict[str, tuple]:
    """Each special token role with its text and id (what sentences are framed with)."""
    out = {}
    for role in ("bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token"):
        text = getattr(tok, role, None)
        if text is not None:
            out[role] = (str(text), tok.convert_tokens_to_ids(str(text)))
    extra = getattr(tok, "additional_special_tokens", None) or []
    if extra:
        out["additional_special_tokens"] = tuple(map(str, extra))
    return out


def refuse_incomparable(base: Loaded, other: Loaded, base_name: str, name: str) -> None:
    """Raise a ConfigError when ``other`` is not a quantized version of ``base`` that can be audited against it, or
    when it is the base itself (the same weights: nothing was quantized)."""
    problems = comparability_problems(base, other)
    if problems:
        raise ConfigError(f"{name} cannot be audited against {base_name}: {'; '.join(problems)}. An audit scores both "
                          f"on the same token ids and compares them item by item; give the base the checkpoint was "
                          f"quantized from")
    a, b = base.model.state_dict(), other.model.state_dict()
    if a.keys() == b.keys() and all(_same_values(a[k], b[k]) for k in a):
        raise ConfigError(f"{name} has exactly the weights of {base_name} (a copy of the base, or a quantization "
                          f"that changed nothing): every difference would be 0, so there is nothing to audit; give "
                          f"the quantized checkpoint")


def _same_values(x: Any, y: Any) -> bool:
    """Whether two tensors hold the same values (any dtype, compared on the CPU)."""
    import torch
    return x.shape == y.shape and bool(torch.equal(x.detach().cpu().float(), y.detach().cpu().float()))


def output_folders(out: Path, quantized: Sequence[str]) -> list[Path]:
    """``out`` itself for one checkpoint; for several, ``out/<checkpoint folder name>``, numbered where names repeat."""
    if len(quantized) == 1:
        return [out]
    names: list[str] = []
    for name in quantized:
        stem = candidate = Path(name.rstrip("/")).name or "quantized"
        while candidate in names:
            candidate = f"{stem}_{len(names)}"
        names.append(candidate)
    return [out / n for n in names]


def _evaluated(name: str, loaded: Loaded, tasks: list[str], *, batch_size: int, limit: int | None,
               options: dict) -> dict:
    """One model's evaluation: its description, compute dtype, results without items, and the items per task."""
    from .evaluation import evaluate
    from .evaluation.items import split_evaluation
    results = evaluate(loaded.model, loaded.tokenizer, tasks, batch_size=batch_size, limit=limit, **options)
    results["model"]["name"] = name
    stripped, items = split_evaluation(results)
    return {"name": name, "format": loaded.description, "dtype": results["model"]["dtype"], "results": stripped,
            "items": items}


def compare_with_base(base: dict, quantized: dict, tasks: list[str], *, n_boot: int, seed: int) -> dict:
    """Every metric and bias category of two evaluations on the same items, as paired rows with verdicts."""
    rows, categories = [], []
    for task in tasks:
        a, b = base["items"][task], quantized["items"][task]
        for row in compare_items(task, a, b, n_boot=n_boot, seed=seed, labels=("base", "quantized")):
            rows.append({**row, "audit": verdict_words(row)})
        categories += category_rows(task, a, b, n_boot=n_boot, seed=seed)
    return {"base": {k: v for k, v in base.items() if k != "items"},
            "quantized": {k: v for k, v in quantized.items() if k != "items"},
            "tasks": tasks, "n_boot": n_boot, "seed": seed, "rows": rows, "categories": categories}


def write_audit(report: dict, base: dict, quantized: dict, folder: Path) -> None:
    """audit.json, audit.md, forest.png and both models' items; audit.json last, so it marks a whole folder."""
    from .evaluation.items import write_items
    folder.mkdir(parents=True, exist_ok=True)
    write_items(folder / "base" / "items", base["items"])
    write_items(folder / "quantized" / "items", quantized["items"])
    write_file(folder / "audit.md", audit_markdown(report) + "\n")
    if forest_plot({"baseline": "base", "comparisons": [{"run": "quantized", "rows": report["rows"]}]},
                   folder / "forest.png"):
        report["plot"] = "forest.png"
    write_file(folder / "audit.json", json.dumps(report, indent=2, default=str) + "\n")


def audit_markdown(report: dict) -> str:
    """The audit as a page: verdict per metric, the full table, and the per-category rows."""
    q, b = report["quantized"], report["base"]
    lines = [f"# Audit: `{q['name']}` against its base `{b['name']}`", "",
             f"Quantized format: {q['format']}. Computed in {b.get('dtype', '?')} (base) and {q.get('dtype', '?')} "
             f"(quantized). Both scored on the same items; every difference is quantized − base, "
             f"with a 95 % paired interval ({report['n_boot']} bootstrap resamples) and its test (exact McNemar for "
             f"the share-of-pairs scores). One quantized checkpoint is one draw of its quantizer's rounding.", "",
             "## Verdicts", ""]
    lines += [f"- **{r['task']}.{r['metric']}: {r['audit']}**: {row_sentence(r, 'base', 'quantized')}"
              for r in report["rows"]]
    lines += ["", "## Every metric", "", "| task | metric | n | base | quantized | difference [95 % CI] | p | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['task']} | {r['metric']} | {r['n']} | {r['a']:.4g} | {r['b']:.4g} | {r['diff']:+.3g} "
                     f"[{r['lo']:+.3g}, {r['hi']:+.3g}] | {r['p']:.3g} | {r['audit']} |")
    if report["categories"]:
        lines += ["", "## Per bias category", "",
                  f"{len(report['categories'])} tests: at p < 0.05 about {0.05 * len(report['categories']):.1f} would "
                  f"come out significant by chance alone.", "",
                  "| task | category | metric | n | base | quantized | difference [95 % CI] | p | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in report["categories"]:
            lines.append(f"| {r['task']} | {r['category']} | {r['metric']} | {r['n']} | {r['a']:.4g} | {r['b']:.4g} | "
                         f"{r['diff']:+.3g} [{r['lo']:+.3g}, {r['hi']:+.3g}] | {r['p']:.3g} | {r['audit']} |")
    return "\n".join(lines)
