"""Property-based fuzzing of what issue 26 named besides pipelines: checkpoints, plugins, data files.

- Checkpoint tampering (flipped bytes, changed or deleted config fields, removed records or files):
  loading with verification ends in a model whose weights are the exported ones, or in a
  FairGPTQError (exit 2), never in another exception.  (``--trust-unverified`` is the user's explicit
  choice to read a changed checkpoint; tests/test_checkpoint_integrity.py covers what it still refuses.)
  The tampering includes the tokenizer files, the chat template and the README.md model card.
- Plugin factories returning anything: ``Registry.create`` returns what the kind needs or raises a
  PluginError naming the plugin.
- Evaluation data files of any content and encoding: every task's reader, as validate calls it, gives
  items or one message, never an exception.
- Audit inputs (issue 35): a base and one or two "quantized" models drawn from sound and tampered
  checkpoints, the base itself or a copy of it, another architecture, missing paths, files, empty
  folders, with any ``--out`` and flags: ``fairgptq audit`` reaches the evaluation or exits 2 with one
  message, never exit 1 or a traceback (the evaluation itself is stubbed: what is fuzzed is everything
  audit checks before it).

Derandomized, so the same cases run on every CI run; 200 + 150 + 200 + 120 examples
(``FAIRGPTQ_FUZZ_SCALE`` multiplies them), with tests/test_run_safety_fuzz.py's 500 pipeline cases over
1000 in all.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairgptq.core.errors import FairGPTQError, PluginError
from fairgptq.export import load_gptq_checkpoint
from fairgptq.contract.hooks import hookimpl
from fairgptq.registry import Registry

from tiny_model import export_tiny
from fuzz_strategies import FUZZ, SCALE, anything



@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("fuzz") / "model")


CONFIG_KEYS = ["bits", "group_size", "sym", "desc_act", "checkpoint_format", "quant_method", "meta"]
MODEL_KEYS = ["num_hidden_layers", "hidden_size", "vocab_size", "intermediate_size", "num_attention_heads",
              "model_type", "dtype", "quantization_config", "tie_word_embeddings"]
tampering = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**9)),
    st.tuples(st.just("set_qc"), st.sampled_from(CONFIG_KEYS), anything),
    st.tuples(st.just("set_config"), st.sampled_from(MODEL_KEYS), anything),
    st.tuples(st.just("drop_record"), st.just(None)),
    st.tuples(st.just("remove"), st.sampled_from(["quantize_config.json", "config.json", "model.safetensors",
                                                   "tokenizer.json", "tokenizer_config.json", "README.md"])),
    st.tuples(st.just("write"), st.sampled_from(["tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                                                  "special_tokens_map.json", "README.md"]), st.binary(max_size=40)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
), min_size=1, max_size=3)


def _apply(folder: Path, op: tuple) -> None:
    kind, *args = op
    weights = folder / "model.safetensors"
    if kind in ("flip", "truncate") and weights.is_file():
        data = bytearray(weights.read_bytes())
        if kind == "flip" and data:
            data[args[0] % len(data)] ^= 0xFF
        else:
            data = data[:args[0] % max(1, len(data))]
        weights.write_bytes(bytes(data))
    elif kind in ("set_qc", "set_config", "drop_record"):
        path = folder / ("config.json" if kind == "set_config" else "quantize_config.json")
        if not path.is_file():
            return
        config = json.loads(path.read_text())
        if kind == "drop_record":
            if isinstance(config.get("meta"), dict):
                config["meta"].pop("fairgptq", None)
        else:
            config[args[0]] = args[1]
        path.write_text(json.dumps(config, default=str))
    elif kind == "remove":
        (folder / args[0]).unlink(missing_ok=True)
    elif kind == "write":
        (folder / args[0]).write_bytes(args[1])


@settings(max_examples=int(200 * SCALE), **FUZZ)
@given(ops=tampering)
def test_tampered_checkpoints_load_faithfully_or_are_refused(exported, tmp_path_factory, ops):
    folder, weights = exported
    case = tmp_path_factory.mktemp("case") / "model"
    shutil.copytree(folder, case)
    for op in ops:
        _apply(case, op)
    try:
        model, _, _ = load_gptq_checkpoint(case, dtype="float32")
    except FairGPTQError:
        return  # exit 2 with one message
    for name, w in weights.items():  # every check held: the weights must be the exported ones
        assert torch.equal(model.get_submodule(name).weight.data, w), (name, ops)


returns = st.one_of(anything, st.just([]), st.sampled_from(["x", 3, None, object()]))


@settings(max_examples=int(150 * SCALE), **FUZZ)
@given(kind=st.sampled_from(["backends", "objectives", "pair_sources"]), value=returns)
def test_plugin_factories_returning_anything_are_named(kind, value):
    class Plugin:
        pass

    hook = {"backends": "fairgptq_backends", "objectives": "fairgptq_objectives",
            "pair_sources": "fairgptq_pair_sources"}[kind]
    setattr(Plugin, hook, hookimpl(lambda self: {"fuzzed": lambda **kw: value}))
    registry = Registry(entry_points=False)
    registry.register(Plugin(), name="fuzzed_plugin")
    try:
        made = registry.create(kind, "fuzzed")
    except PluginError as e:
        assert "'fuzzed'" in str(e)
        return
    assert kind == "pair_sources" and isinstance(made, (list, tuple)) and len(made) == 0


TASK_FILES = {"crows_pairs": ".csv", "stereoset": ".jsonl", "wikitext2": ".txt", "piqa": ".jsonl"}
contents = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8")),
                     st.lists(st.text(alphabet="abc ,\"\n{}:[]", max_size=30), max_size=8).map(
                         lambda rows: "\n".join(rows).encode("utf-8")))


@settings(max_examples=int(200 * SCALE), **FUZZ)
@given(task=st.sampled_from(sorted(TASK_FILES)), data=contents, as_folder=st.booleans())
def test_data_files_of_any_content_give_items_or_one_message(tmp_path_factory, task, data, as_folder):
    from fairgptq.evaluation.task_registry import registered_tasks
    from fairgptq.pipeline.preflight import data_problem
    folder = tmp_path_factory.mktemp("data")
    path = folder if as_folder else folder / f"data{TASK_FILES[task]}"
    if not as_folder:
        path.write_bytes(data)
    problem = data_problem(registered_tasks()[task].read_data, path, task)
    assert problem is None or (isinstance(problem, str) and "\n" not in problem.strip())


class _Evaluating(FairGPTQError):
    """Raised by the stubbed evaluation: the audit accepted its inputs."""


@pytest.fixture(scope="module")
def audit_models(exported, tmp_path_factory):
    from tiny_model import save_tiny_llama
    root = tmp_path_factory.mktemp("audit_fuzz")
    base = save_tiny_llama(root / "base")
    (root / "notes.txt").write_text("not a model")
    (root / "empty").mkdir()
    (root / "config_only").mkdir()
    shutil.copy(base / "config.json", root / "config_only" / "config.json")
    return {"base": base, "copy_of_base": shutil.copytree(base, root / "copy_of_base"),
            "export": exported[0], "other_arch": save_tiny_llama(root / "other_arch", hidden=32),
            "file": root / "notes.txt", "weights_file": base / "model.safetensors", "empty": root / "empty",
            "config_only": root / "config_only", "missing": root / "missing", "missing_rel": Path("no/such/model")}


# weighted towards inputs that get past the cheap checks, so the checkpoint and comparability checks get most cases
audit_model = st.one_of(st.sampled_from(["export", "export", "copy_of_base", "other_arch", "file", "weights_file",
                                         "empty", "config_only", "missing", "missing_rel"]).map(lambda k: (k, [])),
                        tampering.map(lambda ops: ("export", ops)), tampering.map(lambda ops: ("export", ops)))
audit_out = st.sampled_from([None, None, None, None, "new", "new", "file", "occupied", "done"])


@settings(max_examples=int(120 * SCALE), **FUZZ)
@given(base=st.sampled_from(["base"] * 6 + ["export", "missing", "file", "empty"]),
       quantized=st.lists(audit_model, min_size=1, max_size=2), out=audit_out, trust=st.booleans(),
       dtype=st.sampled_from([None, "float32", "bfloat16"]))
def test_audit_inputs_reach_the_evaluation_or_one_message(audit_models, tmp_path_factory, monkeypatch, capsys, base,
                                                          quantized, out, trust, dtype):
    import fairgptq.audit as audit_module
    from fairgptq.cli import main

    def stub(name, *a, **k):
        raise _Evaluating("evaluating")
    monkeypatch.setattr(audit_module, "_evaluated", stub)
    case = tmp_path_factory.mktemp("audit_case")
    names = []
    for i, (key, ops) in enumerate(quantized):
        folder = audit_models[key]
        if ops:
            folder = shutil.copytree(folder, case / f"tampered{i}")
            for op in ops:
                _apply(folder, op)
        names.append(str(folder))
    argv = ["audit", str(audit_models[base]), *names, "--tasks", "crows_pairs", "--limit", "2"]
    if out is not None:
        target = case / "out"
        if out == "file":
            target.write_text("mine")
        elif out in ("occupied", "done"):
            target.mkdir()
            (target / ("audit.json" if out == "done" else "notes.txt")).write_text("mine")
        argv += ["--out", str(target)]
    argv += ["--trust-unverified"] * trust + (["--dtype", dtype] if dtype else [])
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "fairgptq failed" not in err, (argv, err)
    if out in ("file", "occupied", "done"):
        assert "mine" in ((case / "out").read_text() if out == "file" else
                          next(p for p in (case / "out").iterdir()).read_text())
