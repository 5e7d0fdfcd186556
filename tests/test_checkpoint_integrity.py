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
        load_gptq_checkpoint(copy, verify=False)


def test_no_verify_is_the_users_explicit_choice(copy):
    (copy / "quantize_config.json").unlink()  # config.json's quantization_config still describes the tensors
    model, _, qc = load_gptq_checkpoint(copy, verify=False)
    assert qc["bits"] == 4 and torch.isfinite(next(model.parameters())).all()
