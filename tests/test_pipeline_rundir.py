"""Run directories: atomic, never silently overwritten, partial output never looks complete."""
from __future__ import annotations

import pytest

from fairgptq.core.errors import FairGPTQError
from fairgptq.pipeline.rundir import (COMPLETE, RunDirError, atomic_run_dir, is_complete, prepare_sweep_dir,
                                      write_atomic)


def test_successful_run_appears_complete_at_once(tmp_path):
    final = tmp_path / "run"
    with atomic_run_dir(final) as tmp:
        (tmp / "results.json").write_text("{}")
        assert not final.exists() and tmp != final
    assert is_complete(final) and (final / "results.json").is_file()
    assert not list(tmp_path.glob(".run.partial-*"))


def test_failed_run_leaves_no_final_dir_and_the_next_attempt_cleans_up(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with atomic_run_dir(final) as tmp:
            (tmp / "run.log").write_text("boom")
            raise RuntimeError("boom")
    assert not final.exists()
    partial = list(tmp_path.glob(".run.partial-*"))
    assert len(partial) == 1 and not (partial[0] / COMPLETE).exists()
    with atomic_run_dir(final):
        pass
    assert is_complete(final) and not list(tmp_path.glob(".run.partial-*"))


def test_existing_run_is_refused_without_force_and_replaced_with_it(tmp_path):
    final = tmp_path / "run"
    with atomic_run_dir(final) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(RunDirError, match="already exists .*--force") as e:
        with atomic_run_dir(final):
            pytest.fail("must not start")
    assert isinstance(e.value, FairGPTQError) and (final / "old.txt").is_file()
    with atomic_run_dir(final, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert (final / "new.txt").is_file() and not (final / "old.txt").exists()


def test_sweep_dir_resumes_only_the_same_unfinished_sweep(tmp_path):
    d = tmp_path / "sweep"
    assert prepare_sweep_dir(d, "config: 1\n") is False
    assert prepare_sweep_dir(d, "config: 1\n") is True
    with pytest.raises(RunDirError, match="holds a different sweep"):
        prepare_sweep_dir(d, "config: 2\n")
    (d / COMPLETE).write_text("done")
    with pytest.raises(RunDirError, match="complete sweep; pass --force"):
        prepare_sweep_dir(d, "config: 1\n")
    assert prepare_sweep_dir(d, "config: 2\n", force=True) is False and not is_complete(d)


def test_write_atomic_replaces_whole_files(tmp_path):
    p = tmp_path / "a" / "f.txt"
    write_atomic(p, "one")
    write_atomic(p, b"two")
    assert p.read_text() == "two" and [x.name for x in p.parent.iterdir()] == ["f.txt"]
