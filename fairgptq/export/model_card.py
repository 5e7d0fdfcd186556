"""The model card (README.md) of an exported checkpoint: Hugging Face front matter, how it was made, what it scores.

The front matter is what the Hub reads (``base_model``, ``library_name``, ``tags``, ``pipeline_tag``
and a ``model-index`` entry per evaluated metric, parsed by ``huggingface_hub.ModelCard``).  The body
says how the model was made (quantization settings, objectives with their pair sets and hashes,
seeds), how it scores beside the float model and plain GPTQ on the same calibration (each
difference with its interval and test, from the run's own item-level comparisons), and its limits.
Every number comes from the run's ``results.json``; a checkpoint exported outside a pipeline gets
the first part only.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import yaml

from ..analysis.formatting import interval, number
from ..version import __version__

TASK_NAMES = {"crows_pairs": "CrowS-Pairs", "stereoset": "StereoSet (intrasentence)", "wikitext2": "WikiText-2",
              "piqa": "PIQA", "openbookqa": "OpenBookQA", "siqa": "Social IQa", "boolq": "BoolQ"}
#: what a base model's own card should say about it when it came from somewhere unusual
SOURCE_NOTES = {
    "gguf": "The base weights were read from a GGUF file and de-quantized to float, so the \"float\" model here was "
            "already on a low-bit grid (SmolLM2-135M-Instruct's is Q4_1): its quantization behaves unlike that of a "
            "model trained in float, and results may not transfer.",
}


def model_card(quantize_config: Mapping[str, Any], *, model_name: str, base_model: str | None,
               results: Mapping[str, Any] | None = None, source_kind: str | None = None) -> str:
    """README.md text for an exported checkpoint (``results``: the run record, when the model was evaluated)."""
    record = fairgptq_record(quantize_config)
    front = _front_matter(quantize_config, record, model_name, base_model, results)
    parts = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {model_name}: {quantize_config['bits']}-bit GPTQ with fairgptq", "",
             f"A {quantize_config['bits']}-bit GPTQ checkpoint of `{base_model or model_name}` made with fairgptq "
             f"{__version__}. It loads in transformers (with optimum / GPTQModel) and GPTQModel as any GPTQ checkpoint.",
             "", "## How it was made", "", *_how_made(quantize_config, record, results), ""]
    if results and results.get("metrics"):
        parts += ["## Evaluation", "", *_evaluation(results), ""]
    parts += ["## Limits", "", *_limits(results, source_kind), ""]
    return "\n".join(parts)


def fairgptq_record(qc: Mapping[str, Any]) -> dict:
    """The ``fairgptq`` section of a quantize_config (``meta.fairgptq``; top level in older exports)."""
    return dict(qc.get("meta", {}).get("fairgptq") or qc.get("fairgptq") or {})


def _front_matter(qc, record, model_name, base_model, results) -> dict:
    front: dict[str, Any] = {}
    if base_model:
        front["base_model"] = base_model
    front.update({"library_name": "transformers", "pipeline_tag": "text-generation",
                  "tags": ["gptq", f"{qc['bits']}-bit", "quantized", "fairgptq", "bias-evaluation"]})
    if any(o.get("name") != "none" for o in record.get("objectives") or []):
        front["tags"].append("bias-mitigation")
    metrics = (results or {}).get("metrics") or {}
    entries = []
    for key, value in metrics.items():
        task, _, metric = key.partition(".")
        if task == "pair_gap":
            continue
        entries.append({"task": {"type": "text-generation"},
                        "dataset": {"name": TASK_NAMES.get(task, task), "type": task},
                        "metrics": [{"type": metric, "value": round(float(value), 4),
                                     "name": f"{TASK_NAMES.get(task, task)} {metric}"}]})
    if entries:
        front["model-index"] = [{"name": model_name, "results": entries}]
    return front


def _how_made(qc, record, results) -> list[str]:
    grouping = record.get("grouping") or {}
    lines = [f"- Quantization: GPTQ, {qc['bits']} bits, group size {grouping.get('quantized_group_size', qc['group_size'])}"
             f" (stored as {qc['group_size']}), {'symmetric' if qc['sym'] else 'asymmetric'}, "
             f"act-order {qc['desc_act']}, static groups {qc.get('static_groups', False)}, group-aware reordering "
             f"{qc.get('meta', {}).get('act_group_aware', False)}, damping {qc['damp_percent']}, true-sequential."]
    objectives = record.get("objectives") or []
    if not objectives:
        lines.append("- Objectives: none (plain GPTQ).")
    for o in objectives:
        settings = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in o.items()
                             if k not in ("name", "pair_set", "pairs", "pairs_sha256_16") and not isinstance(v, dict))
        pairs = (f" on {o['pairs']} pairs of `{o.get('pair_set')}` (sha256/16 `{o.get('pairs_sha256_16')}`)"
                 if "pairs" in o else "")
        lines.append(f"- Objective `{o.get('name')}`{pairs}: {settings}.")
    for name, info in (record.get("pair_sets") or {}).items():
        lines.append(f"- Pair set `{name}`: {info.get('n')} pairs from `{info.get('source')}`, split "
                     f"{info.get('split')}, seed {info.get('seed')}, sha256/16 `{info.get('sha256_16')}`.")
    if results:
        seeds = results.get("seeds") or {}
        lines.append(f"- Seeds: {', '.join(f'{k} {v}' for k, v in seeds.items())}. Pipeline `{results.get('pipeline')}`; "
                     f"its resolved settings are in the run's `config.yaml`.")
        events = sum(len(m.get("stability", {}).get("events") or []) for m in results["quantization"]["modules"])
        lines.append(f"- Stability: {events} damping / repair event(s) over {len(results['quantization']['modules'])} "
                     f"modules (each is listed in `quantize_config.json`).")
    return lines


def _evaluation(results) -> list[str]:
    from ..evaluation.report import headline_metrics
    metrics = results["metrics"]
    float_m = headline_metrics(results.get("baseline"))
    plain_m = headline_metrics(results.get("plain_baseline"))
    vs_plain = {f"{r['task']}.{r['metric']}": r for r in results.get("vs_plain") or []}
    vs_float = {f"{r['task']}.{r['metric']}": r for r in results.get("vs_float") or []}
    lines = ["Scored by fairgptq's evaluators on the same items for every model. Intervals are 95 % paired intervals "
             "over items (bootstrap; McNemar's exact test for the share-of-pairs scores), for this one quantization "
             "run: one draw of GPTQ's rounding, not a claim about the method across seeds.", "",
             "| metric | this model | float model | − float [95 % CI], p | plain GPTQ (same calibration) "
             "| − plain GPTQ [95 % CI], p |", "|---|---|---|---|---|---|"]
    for key, value in metrics.items():
        if key.startswith("pair_gap."):
            continue
        lines.append(f"| {key} | {value:.4g} | {number(float_m.get(key))} | {_diff(vs_float.get(key))} | "
                     f"{number(plain_m.get(key))} | {_diff(vs_plain.get(key))} |")
    return lines


def _limits(results, source_kind) -> list[str]:
    lines = ["- A bias score of one run moves with GPTQ's rounding noise; a difference counts only where it is "
             "significant here, and a claim about the method needs repeats over seeds (see fairgptq's docs/research.md).",
             "- CrowS-Pairs and StereoSet measure a narrow, English, US-centred notion of stereotype; a lower score is "
             "not evidence that the model is fair.",
             "- The base model's own card applies: its intended uses, limits and licence carry over to this checkpoint."]
    if source_kind in SOURCE_NOTES:
        lines.append(f"- {SOURCE_NOTES[source_kind]}")
    return lines


def _diff(row: Mapping[str, Any] | None) -> str:
    if not row:
        return "–"
    p = f", p {row['p']:.2g}" if row.get("p") is not None else ""
    return f"{interval(row['diff'], row.get('lo'), row.get('hi'), '+.3g')}{p}"
