"""Issue 35: one overwrite policy for every file a command writes, and reports / compare --groups that
refuse bad input with one message (exit 2) instead of a traceback or a silent wrong answer."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fairgptq import cli
from fairgptq.outputs import OutputExists, file_mode, output_file, output_folder, write_file

from command_fixtures import METRIC, sweep_summary, write_group, write_sweep
from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pipe")
    return write_yaml(d / "t.yaml", tiny_pipeline(save_tiny_llama(d / "tiny"), write_pair_file(d / "p.jsonl")))


@pytest.fixture
def sweep(tmp_path) -> Path:
    return write_sweep(tmp_path / "sweep", sweep_summary())


def test_report_plot_never_replaces_a_users_file_without_force(sweep, tmp_path, capsys):
    mine = tmp_path / "u" / "mine.png"
    mine.parent.mkdir()
    mine.write_bytes(b"my own picture")
    assert cli.main(["report", str(sweep), "--plot", str(mine)]) == 2
    assert mine.read_bytes() == b"my own picture"
    assert f"{mine} exists" in capsys.readouterr().err and "--force" in capsys.readouterr().err + "--force"
    assert cli.main(["report", str(sweep), "--plot", str(mine), "--force"]) == 0
    assert mine.read_bytes().startswith(b"\x89PNG")


def test_report_plot_names_the_file_it_wrote(sweep, tmp_path, capsys):
    assert cli.main(["report", str(sweep), "--plot", str(tmp_path / "runs" / "rp")]) == 0
    written = tmp_path / "runs" / "rp.png"
    assert written.is_file() and not (tmp_path / "runs" / "rp").exists()
    assert f"wrote {written}" in capsys.readouterr().out.replace("\n", "")


def test_report_refuses_a_broken_summary_with_one_message(sweep, capsys):
    broken = [
        "{not json",                                                       # JSONDecodeError
        json.dumps([1, 2]),                                                 # TypeError
        json.dumps({**sweep_summary(), "groups": [{"group": "x"}]}),       # KeyError
        json.dumps({**sweep_summary(), "points": []}),                      # IndexError
        json.dumps({**sweep_summary(), "groups": [{**sweep_summary()["groups"][0], "seeds": ["0"]}]}),
    ]
    for text in broken:
        (sweep / "results.json").write_text(text)
        assert cli.main(["report", str(sweep)]) == 2, text
        assert "results.json" in capsys.readouterr().err


def test_report_of_a_single_run_says_so(tmp_path, capsys):
    run = write_sweep(tmp_path / "run", {"pipeline": "t", "config": {}, "metrics": {METRIC: 50.0}})
    assert cli.main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is a single run, not a sweep" in err and "without repeats" not in err


def test_report_with_one_seed_gives_means_without_intervals(tmp_path, capsys):
    summary = sweep_summary(seeds=(0,))
    summary["groups"][1]["vs_reference"]["across_seeds"][METRIC] = {"n": 1, "mean": -1.0, "lo": None, "hi": None,
                                                                    "p": None}
    assert cli.main(["report", str(write_sweep(tmp_path / "s", summary))]) == 0
    assert "-1.00 (no interval), p –" in capsys.readouterr().out


def test_compare_groups_refuses_a_group_against_itself(tmp_path, capsys):
    a = write_group(tmp_path / "a", {0: 50.0, 1: 52.0})
    assert cli.main(["compare", "--groups", str(a), str(a)]) == 2
    assert "same group" in capsys.readouterr().err


def test_compare_groups_names_unpaired_seeds_or_refuses_them(tmp_path, capsys):
    a = write_group(tmp_path / "a", {0: 50.0, 1: 52.0, 2: 51.0})
    b = write_group(tmp_path / "b", {0: 49.0, 1: 50.0, 7: 48.0})
    assert cli.main(["compare", "--groups", str(a), str(b), "--metrics", METRIC]) == 2
    err = capsys.readouterr().err
    assert f"{a} has [2]" in err and f"{b} has [7]" in err and "--allow-unpaired" in err
    assert cli.main(["compare", "--groups", str(a), str(b), "--metrics", METRIC, "--allow-unpaired"]) == 0
    captured = capsys.readouterr()
    assert "seeds [2]" in captured.err.replace("\n", " ") and "(2 seeds)" in captured.out
    assert "Seeds [7] of" in captured.out


def test_compare_groups_refuses_a_metric_that_is_not_a_number(tmp_path, capsys):
    a = write_group(tmp_path / "a", {0: 50.0, 1: "12.5"})
    b = write_group(tmp_path / "b", {0: 49.0, 1: 50.0})
    assert cli.main(["compare", "--groups", str(a), str(b), "--metrics", METRIC]) == 2
    assert "'12.5'" in capsys.readouterr().err
    write_group(a, {1: True})
    assert cli.main(["compare", "--groups", str(a), str(b), "--metrics", METRIC]) == 2


def test_compare_groups_refuses_a_stray_seed_folder(tmp_path, capsys):
    a = write_group(tmp_path / "a", {0: 50.0, 1: 52.0})
    b = write_group(tmp_path / "b", {0: 49.0, 1: 50.0})
    (a / "seed=abc").mkdir()
    (a / "seed=abc" / "results.json").write_text("{}")
    assert cli.main(["compare", "--groups", str(a), str(b)]) == 2
    assert "seed=abc: not a seed run folder" in capsys.readouterr().err


def test_compare_groups_honours_out_and_refuses_flags_it_does_not_use(tmp_path, capsys):
    a = write_group(tmp_path / "a", {0: 50.0, 1: 52.0})
    b = write_group(tmp_path / "b", {0: 49.0, 1: 50.5})
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--groups", str(a), str(b), "--metrics", METRIC, "--out", str(out)]) == 0
    saved = json.loads((out / "compare.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["rows"][0]["metric"] == METRIC
    assert "seed-matched" in (out / "compare.md").read_text()
    assert cli.main(["compare", "--groups", str(a), str(b), "--out", str(out)]) == 2  # exists: not replaced
    assert "--force" in capsys.readouterr().err
    assert cli.main(["compare", "--groups", str(a), str(b), "--out", str(out), "--force"]) == 0
    assert cli.main(["compare", "--groups", str(a), str(b), "--bootstrap", "500"]) == 2
    assert "--bootstrap do not apply to --groups" in capsys.readouterr().err


def test_output_paths_that_cannot_be_written_are_refused_up_front(tmp_path):
    from fairgptq.core.errors import ConfigError
    with pytest.raises(ConfigError, match="cannot create"):
        output_file("/proc/x/y.png", suffix=".png")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        output_file(os.fsdecode(bytes(tmp_path) + b"/\xff.json"))
    with pytest.raises(ConfigError, match="is a folder"):
        output_file(tmp_path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(OutputExists):
        output_folder(tmp_path, ["x.json"])
    assert output_folder(tmp_path, ["x.json"], force=True) == tmp_path


@pytest.mark.parametrize("argv", [["compare", "--groups", "A", "B", "--out", "/proc/x"],
                                  ["report", "SWEEP", "--plot", "/proc/x/p"],
                                  ["eval", "MODEL", "--out", "/proc/x"],
                                  ["compare", "--groups", "A", "B", "--out", "BAD"],
                                  ["eval", "MODEL", "--out", "BAD.json"],
                                  ["run", "PIPE", "--out", "/proc/x"],
                                  ["run", "PIPE", "--out", "BAD"]])
def test_commands_refuse_unwritable_outputs_with_exit_2(argv, tmp_path, sweep, pipeline_file, capsys):
    a = write_group(tmp_path / "a", {0: 50.0, 1: 52.0})
    b = write_group(tmp_path / "b", {0: 49.0, 1: 50.5})
    bad = os.fsdecode(bytes(tmp_path) + b"/\xff")
    names = {"A": str(a), "B": str(b), "SWEEP": str(sweep), "MODEL": str(tmp_path / "no-model"),
             "BAD": bad, "BAD.json": bad + ".json",
             "PIPE": str(pipeline_file)}
    assert cli.main([names.get(x, x) for x in argv]) == 2
    assert "fairgptq failed" not in capsys.readouterr().err


def test_one_file_mode_for_every_output_under_any_umask(tmp_path):
    old = os.umask(0o077)
    try:
        assert file_mode() == 0o600
        path = write_file(tmp_path / "a.json", "{}")
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert write_file(tmp_path / "b.json", "{}").stat().st_mode & 0o777 == 0o666 & ~old


def test_audit_out_names_the_audits_own_files(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert cli.main(["audit", "base", "quantized", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "audit.json" in err and "compare.json" not in err and taken.read_text() == "mine"
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "audit.md").write_text("an earlier audit")
    assert cli.main(["audit", "base", "quantized", "--out", str(tmp_path / "done")]) == 2
    assert "already holds audit.md" in capsys.readouterr().err


def test_report_rewrite_of_a_damaged_sweep_is_one_message(sweep, capsys):
    (sweep / "sweep.yaml").write_text("name: [unclosed\n")
    assert cli.main(["report", str(sweep), "--rewrite"]) == 2
    assert "not readable" in capsys.readouterr().err
