"""What a fairgptq checkpoint's integrity record covers, and what the loader refuses (issue 26, finding 3).

Each case tampers with a freshly exported tiny checkpoint the way the finding describes and asserts a
one-line refusal naming the cause (exit 2 from ``fairgptq eval``), or, with ``--no-verify``, that
the user's explicit choice is honoured where the tensors themselves are sound.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fairgptq.cli import main
from fairgptq.export import load_gptq_checkpoint
from fairgptq.export.integrity import CheckpointIntegrityError

from tiny_model import export_tiny

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("integrity") / "model")[0]


@pytest.fixture
def copy(exported, tmp_path):
    return shutil.copytree(exported, tmp_path / "model")


def _json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _tensors(folder, edit):
    t = load_file(str(folder / WEIGHTS))
    edit(t)
    save_file(t, str(folder / WEIGHTS), metadata={"format": "pt"})


def _flip_bytes(folder):
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-100] ^= 0xFF
    (folder / WEIGHTS).write_bytes(bytes(data))


def test_an_untouched_export_loads(exported):
    load_gptq_checkpoint(exported)


@pytest.mark.parametrize("tamper, cause", [
    (lambda f: (_flip_bytes(f), (f / "quantize_config.json").unlink()), "without its integrity record"),
    (lambda f: (_flip_bytes(f), _json(f / "quantize_config.json", lambda q: q["meta"]["fairgptq"].pop("integrity"))),
     "without its integrity record"),
    (lambda f: _json(f / "quantize_config.json", lambda q: q.update(checkpoint_format="gptq_v2")), "quantize_config.json"),
    (lambda f: _json(f / "quantize_config.json", lambda q: q.update(bits=2)), "quantize_config.json"),
    (lambda f: _json(f / "config.json", lambda c: c.update(num_hidden_layers=1)), "config.json"),
], ids=["no-quantize-config", "no-record", "format-v2", "bits-2", "layers-changed"])
def test_tampering_is_refused_naming_the_cause(copy, tamper, cause, capsys):
    tamper(copy)
    with pytest.raises(CheckpointIntegrityError, match=cause):
        load_gptq_checkpoint(copy)
    assert main(["eval", str(copy), "--tasks", "wikitext2"]) == 2
    assert cause.split()[0] in capsys.readouterr().err


@pytest.mark.parametrize("tamper, cause", [
    (lambda f: _tensors(f, lambda t: t["model.embed_tokens.weight"].__setitem__((0, 0), float("nan"))),
     "model.embed_tokens.weight: 1 NaN/Inf"),
    (lambda f: _tensors(f, lambda t: t["model.layers.0.mlp.down_proj.scales"].zero_()), "every scale is 0"),
], ids=["nan-embedding", "zero-scales"])
def test_unsound_tensors_are_refused_even_without_verification(copy, tamper, cause):
    tamper(copy)
    with pytest.raises(CheckpointIntegrityError, match=cause):
        load_gptq_checkpoint(copy, trust_unverified=True)


def test_no_verify_is_the_users_explicit_choice(copy):
    (copy / "quantize_config.json").unlink()  # config.json's quantization_config still describes the tensors
    model, _, qc = load_gptq_checkpoint(copy, trust_unverified=True)
    assert qc["bits"] == 4 and torch.isfinite(next(model.parameters())).all()


# issue 35: the tokenizer and chat template are covered; a stripped record is refused when the card names fairgptq

def _swap_tokens(folder, a="he", b="she"):
    """tokenizer.json with the ids of two words exchanged: the same text becomes other token ids."""
    def edit(t):
        vocab = t["model"]["vocab"]
        vocab[a], vocab[b] = vocab[b], vocab[a]
    _json(folder / "tokenizer.json", edit)


def _strip_records(folder):
    _json(folder / "quantize_config.json", lambda q: q.pop("meta"))
    _json(folder / "config.json", lambda c: c["quantization_config"].pop("meta"))


@pytest.mark.parametrize("tamper, cause", [
    (_swap_tokens, "tokenizer.json: content hash differs"),
    (lambda f: _json(f / "tokenizer_config.json", lambda t: t.update(eos_token="<pad>")),
     "tokenizer_config.json: content hash differs"),
    (lambda f: (f / "chat_template.jinja").write_text("{{ messages }}"), "chat_template.jinja added after export"),
    (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json: missing"),
    (lambda f: (_flip_bytes(f), _strip_records(f)), "README.md model card says fairgptq made it"),
], ids=["swapped-ids", "special-token", "chat-template-added", "tokenizer-removed", "records-stripped"])
def test_what_decides_the_outputs_is_covered(copy, tamper, cause, capsys):
    tamper(copy)
    with pytest.raises(CheckpointIntegrityError, match=cause):
        load_gptq_checkpoint(copy)
    assert main(["eval", str(copy), "--tasks", "wikitext2", "--max-tokens", "64"]) == 2
    err = capsys.readouterr().err
    assert cause.split(":")[0].split()[0] in err and "--trust-unverified" in err and "Traceback" not in err


def test_the_record_holds_every_tokenizer_file(exported):
    record = json.loads((exported / "quantize_config.json").read_text())["meta"]["fairgptq"]["integrity"]
    assert set(record["tokenizer"]) >= {"tokenizer.json", "tokenizer_config.json"}


@pytest.mark.parametrize("flag", ["--trust-unverified", "--no-verify"])
def test_trust_unverified_is_the_one_switch_with_an_older_spelling(copy, flag, tmp_path):
    _strip_records(copy)
    _swap_tokens(copy)
    with pytest.raises(CheckpointIntegrityError):
        load_gptq_checkpoint(copy)
    model, tok, _ = load_gptq_checkpoint(copy, trust_unverified=True)
    assert tok.convert_tokens_to_ids("he") == json.loads((copy / "tokenizer.json").read_text())["model"]["vocab"]["he"]
    assert main(["eval", str(copy), "--tasks", "wikitext2", "--max-tokens", "64", flag]) == 0


def test_a_checkpoint_without_any_sign_of_fairgptq_loads_as_foreign(copy):
    _strip_records(copy)
    (copy / "README.md").write_text("# some GPTQ model\n")
    load_gptq_checkpoint(copy)  # nothing says fairgptq wrote it: nothing to check it against (logged)


# issue 35: the storage dtype is not the compute dtype

def test_a_float16_export_computes_in_float32_on_the_cpu(exported):
    assert json.loads((exported / "config.json").read_text())["dtype"] == "float16"
    model, _, _ = load_gptq_checkpoint(exported)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model16, _, _ = load_gptq_checkpoint(exported, dtype="float16")
    assert {p.dtype for p in model16.parameters()} == {torch.float16}
    from fairgptq.core.errors import ConfigError
    with pytest.raises(ConfigError, match="float64"):
        load_gptq_checkpoint(exported, dtype="float64")


def test_eval_of_an_export_matches_the_in_memory_model(tmp_path, real_data_dir):
    """The quantized model evaluated in memory and its export evaluated by ``fairgptq eval``: the same scores,
    and results.json says the evaluation ran in float32."""
    from fairgptq import QuantConfig, evaluate, export_checkpoint, quantize_model
    from tiny_model import PAIRS, tiny_llama, token_batches
    model, tok = tiny_llama()
    result = quantize_model(model, token_batches(tok, [s for p in PAIRS for s in p]), QuantConfig(bits=4, group_size=32),
                            progress=False)
    export_checkpoint(model, tok, result, tmp_path / "model")  # float16 storage; the model is snapped to it
    options = {"limit": 12, "max_tokens": 256}
    in_memory = evaluate(model, tok, ["crows_pairs", "wikitext2"], progress=False, **options)
    assert main(["eval", str(tmp_path / "model"), "--tasks", "crows_pairs,wikitext2", "--limit", "12",
                 "--max-tokens", "256", "--out", str(tmp_path / "ev")]) == 0
    exported = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert exported["model"]["dtype"] == "float32"
    for task in ("crows_pairs", "wikitext2"):
        ours = {k: v for k, v in in_memory["tasks"][task].items() if isinstance(v, float)}
        assert ours and all(exported["tasks"][task][k] == pytest.approx(v, rel=1e-6) for k, v in ours.items())


def test_a_requested_dtype_is_used_and_recorded(exported, tmp_path):
    assert main(["eval", str(exported), "--tasks", "wikitext2", "--max-tokens", "128", "--dtype", "bfloat16",
                 "--out", str(tmp_path / "bf16.json")]) == 0
    assert json.loads((tmp_path / "bf16.json").read_text())["model"]["dtype"] == "bfloat16"
