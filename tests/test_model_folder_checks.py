"""Late or unclear model-folder errors of issue 35, each now one early line naming the cause.

``validate`` checks a local model folder (config.json, weights, every tensor's shape against the
config, read from the safetensors headers); a missing tokenizer is named as such; an existing file
is not looked up on the hub; ``compare RUN/evaluation.json`` finds the run's ``items/``.
"""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from fairgptq.cli import main

from tiny_model import export_tiny, save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("folder") / "base")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("folder") / "q")[0]


def _validate(capsys, model_dir, tmp_path) -> tuple[int, str]:
    raw = tiny_pipeline(model_dir, write_pair_file(tmp_path / "pairs.jsonl"), output=str(tmp_path / "run"))
    rc = main(["validate", str(write_yaml(tmp_path / "p.yaml", raw))])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, " ".join(err.split())


def test_validate_passes_a_sound_folder(base, tmp_path, capsys):
    assert _validate(capsys, base, tmp_path)[0] == 0


@pytest.mark.parametrize("damage, cause", [
    (lambda f: (f / "config.json").unlink(), "holds neither a config.json"),
    (lambda f: (f / "model.safetensors").unlink(), "has a config.json but no weights"),
    (lambda f: (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()),
                                                          "vocab_size": 200})),
     "do not have the shape its config.json gives"),
    (lambda f: save_file({k.replace("model.", "other."): v for k, v in load_file(str(f / "model.safetensors")).items()},
                         str(f / "model.safetensors")), "the weights belong to another model"),
], ids=["no-config", "no-weights", "wrong-shape", "foreign-names"])
def test_validate_refuses_a_broken_model_folder(base, tmp_path, capsys, damage, cause):
    folder = shutil.copytree(base, tmp_path / "m")
    damage(folder)
    rc, err = _validate(capsys, folder, tmp_path)
    assert rc == 2 and cause in err


def test_a_missing_tokenizer_is_named(base, export, tmp_path, capsys):
    for source in (base, export):
        folder = shutil.copytree(source, tmp_path / source.name)
        for f in folder.glob("tokenizer*"):
            f.unlink()
        trust = ["--trust-unverified"] if source is export else []  # the record would refuse first
        assert main(["eval", str(folder), "--tasks", "wikitext2", "--max-tokens", "32", *trust]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "no tokenizer files" in err and "config.json or tensors" not in err


def test_an_existing_file_is_not_looked_up_on_the_hub(base, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    for name in (notes, base / "model.safetensors"):
        assert main(["eval", str(name), "--tasks", "wikitext2"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "is a file, not a model" in err and "not a local file or folder" not in err
    assert main(["eval", str(base / "nothing-here"), "--tasks", "wikitext2"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compare_reads_a_run_directorys_evaluation_json(base, export, tmp_path, capsys):
    """``fairgptq eval RUN`` writes RUN/evaluation.json beside RUN/items/ (never evaluation_items/)."""
    for name, model in (("float", base), ("run", export)):
        assert main(["eval", str(model), "--tasks", "crows_pairs", "--limit", "6", "--out", str(tmp_path / name)]) == 0
    (tmp_path / "run" / "results.json").rename(tmp_path / "run" / "evaluation.json")
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "run" / "evaluation.json"), "--baseline", str(tmp_path / "float")]) == 0
    assert "evaluation_items" not in capsys.readouterr().err


def test_loading_a_folder_whose_tensors_do_not_fit_its_config_names_the_tensor(base, tmp_path, capsys):
    folder = shutil.copytree(base, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 200}))
    assert main(["eval", str(folder), "--tasks", "wikitext2", "--max-tokens", "32"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "model.embed_tokens.weight is [" in err and "the config makes it [200, 64]" in err
