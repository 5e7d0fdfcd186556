"""``fairgptq audit BASE QUANTIZED``: did quantization make this model more biased than its base, beyond noise?

Most people who run a 4-bit model did not quantize it.  The audit loads the base model and a
quantized version of it (a fairgptq export, any GPTQ checkpoint — GPTQModel's, AutoGPTQ's —, an
llm-compressor / compressed-tensors checkpoint, or another format that loads on the CPU in
transformers), scores both on the same items, and compares them item by item: each metric's
difference with its 95 % interval and test (:mod:`fairgptq.comparison`), per bias category too, a
forest plot, and a verdict in words.  A format that does not load here is refused with what would
load it.
"""
from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .comparison import compare_items, forest_plot, row_sentence
from .core.errors import ConfigError, FairGPTQError
from .evaluation.report import ideal_value, is_bias_metric, lower_is_better

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


def load_for_audit(name: str, dtype: str | None = None, *, verify: bool = True) -> Loaded:
    """A float or quantized model by name: GPTQ folders through fairgptq's loader, other formats through transformers."""
    from .core.model_loading import load_model
    from .export import is_gptq_checkpoint, load_gptq_checkpoint
    path = Path(name)
    if is_gptq_checkpoint(name):
        from .export import fairgptq_record, read_quantize_config
        ours = bool(fairgptq_record(read_quantize_config(path)))
        model, tok, qc = load_gptq_checkpoint(path, dtype=dtype, verify=verify and ours)
        who = (qc.get("meta") or {}).get("quantizer") or ["unknown quantizer"]
        return Loaded(model, tok, f"GPTQ {qc['bits']}-bit g{qc['group_size']} ({', '.join(who)})")
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
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", **kwargs).eval()
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # a loader that refuses the CPU or lacks its kernel: say which format and why
        raise QuantizedFormatError(f"{path}: quantization method {method!r} did not load on the CPU in transformers "
                                   f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})"
                                   ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return Loaded(model, tok, f"{method} (loaded by transformers)")


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
              seed: int = 0, verify: bool = True, **options: Any) -> list[dict]:
    """Several quantized versions of one base, each compared with it; the base is evaluated once.

    Evaluating the base is as costly as evaluating a checkpoint, so auditing three checkpoints of a
    model costs four evaluations here instead of six.  ``outs`` gives one new folder per checkpoint;
    every folder is checked before anything is computed, so a clash never costs the evaluation."""
    tasks = list(tasks)
    if outs is not None:
        if len(outs) != len(quantized):
            raise ConfigError(f"{len(quantized)} quantized checkpoints but {len(outs)} output folders; give one each")
        for folder in outs:
            if Path(folder).exists() and any(Path(folder).iterdir()):
                raise ConfigError(f"--out {folder}: the folder exists and is not empty; give a new folder")
    settings = dict(dtype=dtype, batch_size=batch_size, limit=limit, verify=verify, options=options)
    reference = _evaluated(base, tasks, **settings)
    reports = []
    for i, name in enumerate(quantized):
        other = _evaluated(name, tasks, **settings)
        report = compare_with_base(reference, other, tasks, n_boot=n_boot, seed=seed)
        if outs is not None:
            write_audit(report, reference, other, Path(outs[i]))
        reports.append(report)
    return reports


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


def _evaluated(name: str, tasks: list[str], *, dtype: str | None, batch_size: int, limit: int | None, verify: bool,
               options: dict) -> dict:
    """One model's evaluation: its description, its results without items, and the items per task."""
    from .evaluation import evaluate
    from .evaluation.items import split_evaluation
    loaded = load_for_audit(name, dtype, verify=verify)
    results = evaluate(loaded.model, loaded.tokenizer, tasks, batch_size=batch_size, limit=limit, **options)
    results["model"]["name"] = name
    stripped, items = split_evaluation(results)
    return {"name": name, "format": loaded.description, "results": stripped, "items": items}


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
    (folder / "audit.md").write_text(audit_markdown(report) + "\n", encoding="utf-8")
    if forest_plot({"baseline": "base", "comparisons": [{"run": "quantized", "rows": report["rows"]}]},
                   folder / "forest.png"):
        report["plot"] = "forest.png"
    (folder / "audit.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


def audit_markdown(report: dict) -> str:
    """The audit as a page: verdict per metric, the full table, and the per-category rows."""
    q, b = report["quantized"], report["base"]
    lines = [f"# Audit: `{q['name']}` against its base `{b['name']}`", "",
             f"Quantized format: {q['format']}. Both scored on the same items; every difference is quantized − base, "
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
