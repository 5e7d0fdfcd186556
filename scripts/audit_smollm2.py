"""The audit example of docs/audit.md: SmolLM2-135M-Instruct against three 4-bit checkpoints of it, made by three quantizers.

    .venv/bin/python scripts/audit_smollm2.py --fairgptq runs/demo/model --out runs/audit_smollm2

Makes (in ``--out``) the float model as a transformers folder, a GPTQModel export of it (GPTQModel's
own GPTQ on the CPU, 4-bit g128, the same 64 WikiText-2 validation windows of 512 tokens as the demo)
and a compressed-tensors checkpoint (llm-compressor's format, written by the compressed-tensors
package: round-to-nearest 4-bit g64, symmetric: it needs whole groups and 576 is not a multiple of 128),
then audits each (and the fairgptq export given, the demo's) against the float model, which is
evaluated once, and writes ``summary.md`` with every
verdict and interval.  The base is SmolLM2-135M-Instruct de-quantized from a Q4_1 GGUF: it already
sits on a 4-bit grid, so these audits say what re-quantizing such a model does, not what quantizing
a trained float model does.  Each checkpoint is one draw of its quantizer's rounding.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

TASKS = ["crows_pairs", "wikitext2"]  # StereoSet too would double the time on two cores; --tasks of the audit takes it
#: the demo's evaluation: perplexity on the first 16384 WikiText-2 test tokens (the whole test set is ~18x
#: that, ~40 min a model on two cores), every CrowS-Pairs pair
OPTIONS = {"max_tokens": 16384}


def save_base(out: Path) -> Path:
    from fairgptq import load_model
    base = out / "base"
    if not (base / "config.json").is_file():
        model, tok = load_model("smollm2", "float32")
        model.save_pretrained(base)
        tok.save_pretrained(base)
    return base


def write_gptqmodel_export(base: Path, target: Path, texts: list[str], group_size: int = 128) -> Path:
    """GPTQModel's own GPTQ (4-bit, symmetric, no act-order) on the CPU, in its own process: it sizes thread
    pools at import, and 2 CPU workers satisfy its loader on any machine."""
    texts_file = target.parent / f"{target.name}.calibration.json"
    texts_file.write_text(json.dumps(texts))
    script = ("import json\nfrom gptqmodel import GPTQModel, QuantizeConfig\n"
              f"texts = json.load(open({str(texts_file)!r}))\n"
              f"m = GPTQModel.load({str(base)!r}, QuantizeConfig(bits=4, group_size={group_size}, sym=True, "
              f"desc_act=False), device='cpu')\nm.quantize(texts, batch_size=4)\nm.save({str(target)!r})\n")
    env = {**os.environ, "GPTQMODEL_CPU_WORKERS": "2"}
    # GPTQModel writes a logs/ folder into its working directory
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=target.parent, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"GPTQModel failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return target


def write_compressed_tensors_rtn(base: Path, target: Path, group_size: int = 64) -> Path:
    """A compressed-tensors checkpoint (llm-compressor's format) written by the compressed-tensors package:
    round-to-nearest 4-bit, symmetric, each group's scale from its own range, lm_head kept.

    compressed-tensors needs whole groups (its forward refuses 576 columns at group 128), so SmolLM2 gets
    group 64 (576 = 9 x 64), finer than the GPTQ checkpoints' 128 with a partial last group."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 QuantizationStatus, apply_quantization_config)
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(base)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    apply_quantization_config(model, QuantizationConfig(config_groups={"g": scheme}, ignore=["lm_head"]))
    for module in model.modules():
        if hasattr(module, "weight_scale"):
            groups = module.weight.data.reshape(module.weight.shape[0], -1, args.group_size)
            scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
            module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
            module.weight_zero_point.data.copy_(zero.reshape(module.weight_zero_point.shape))
            module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    compressor.update_config(target)
    return target


def wikitext_texts(base: Path) -> list[str]:
    """The demo's calibration: 64 WikiText-2 validation windows of 512 tokens, as text."""
    from fairgptq.datasets_adapters.wikitext import calibration_windows
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base)
    return [tok.decode(row) for b in calibration_windows(tok, n=64, seqlen=512, seed=0) for row in b.input_ids]


AUDIT_FILES = {"base", "quantized", "audit.md", "forest.png"}


def interrupted(folder: Path) -> None:
    """Remove an audit folder that lacks audit.json (written last) when it holds only what an audit writes."""
    if not folder.exists():
        return
    found = {p.name for p in folder.iterdir()}
    if not found <= AUDIT_FILES:
        raise SystemExit(f"{folder}: holds {sorted(found - AUDIT_FILES)}, not an audit's files; move it away first")
    shutil.rmtree(folder)


def run_audits(base: Path, checkpoints: dict[str, Path], out: Path) -> dict[str, dict]:
    """Each checkpoint's audit against the float model (base evaluated once); a finished audit is read, not redone."""
    from fairgptq.audit import audit_all
    folders = {name: out / f"audit_{path.name if name != 'fairgptq (demo)' else 'fairgptq'}"
               for name, path in checkpoints.items()}
    todo = [name for name in checkpoints if not (folders[name] / "audit.json").is_file()]
    if todo:
        for name in todo:  # a folder without audit.json is an interrupted audit: start it again
            interrupted(folders[name])
        audit_all(str(base), [str(checkpoints[n]) for n in todo], TASKS, outs=[folders[n] for n in todo], **OPTIONS)
    return {name: with_current_words(folders[name]) for name in checkpoints}


def with_current_words(folder: Path) -> dict:
    """A finished audit with its verdict words recomputed from its own numbers by this version's rules
    (the numbers never change; e.g. likelihood_diff's direction now follows lm-eval), audit.md rewritten."""
    from fairgptq.audit import audit_markdown, verdict_words
    report = json.loads((folder / "audit.json").read_text())
    for row in report["rows"] + report["categories"]:
        row["audit"] = verdict_words(row)
    (folder / "audit.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (folder / "audit.md").write_text(audit_markdown(report) + "\n")
    return report


def summary(audits: dict[str, dict]) -> str:
    lines = ["# SmolLM2-135M-Instruct (de-quantized from a Q4_1 GGUF) against three 4-bit checkpoints of it", "",
             "`fairgptq audit`, quantized − float, 95 % paired intervals; one draw of each quantizer's rounding. "
             "CrowS-Pairs: all 1508 pairs; WikiText-2: perplexity on the first 16384 test tokens (the demo's).", "",
             "| checkpoint | metric | float | quantized | difference [95 % CI] | p | verdict |", "|---|---|---|---|---|---|---|"]
    for name, report in audits.items():
        for r in report["rows"]:
            lines.append(f"| {name} | {r['task']}.{r['metric']} | {r['a']:.4g} | {r['b']:.4g} | "
                         f"{r['diff']:+.3g} [{r['lo']:+.3g}, {r['hi']:+.3g}] | {r['p']:.3g} | {r['audit']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fairgptq", required=True, help="a fairgptq export of SmolLM2 (the demo's: runs/demo/model)")
    ap.add_argument("--out", default="runs/audit_smollm2", help="folder for the checkpoints, the audits and summary.md")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = save_base(out)
    gptqmodel, rtn = out / "gptqmodel", out / "compressed_tensors"
    if not (gptqmodel / "quantize_config.json").is_file():
        write_gptqmodel_export(base, gptqmodel, wikitext_texts(base))
    if not (rtn / "config.json").is_file():
        write_compressed_tensors_rtn(base, rtn)
    checkpoints = {"fairgptq (demo)": Path(args.fairgptq), "GPTQModel": gptqmodel, "compressed-tensors (RTN)": rtn}
    audits = run_audits(base, checkpoints, out)
    (out / "summary.md").write_text(summary(audits))
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
