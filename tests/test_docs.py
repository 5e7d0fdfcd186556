"""The README and docs/*.md say only what is true of this checkout, and their code runs.

- The README's Python quickstart runs as written, on the tiny model (the few substitutions are
  listed in ``QUICKSTART_SUBSTITUTIONS``: the model name, the pair set, the calibration size).
- Every top-level function of ``fairgptq`` has a docstring example, and it runs (``MODEL`` is a
  tiny model folder, ``OUT`` a fresh folder).
- In README.md and every docs/*.md page: each relative link (and its #anchor) resolves; each
  repository path named in code (``pipelines/x.yaml``, ``scripts/demo.sh``, ``tests/test_*.py``)
  exists; each pipeline YAML named validates against the schema; each ``fairgptq <command>`` shown
  in code names a command the CLI has, and each ``--flag`` after it is one of that command's options.

The rules read markdown structure, not page names, so pages added later are checked the same way.
"""
from __future__ import annotations

import argparse
import doctest
import inspect
import io
import re
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

import fairgptq

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# --- markdown reading -------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text", "shell-session"}


@dataclass
class Code:
    """A piece of code on a page: a fenced block's line or an inline code span."""

    page: Path
    line: int
    text: str
    lang: str  # the fence's language; "inline" for a span in prose


def _page_parts(page: Path) -> tuple[list[tuple[int, str]], list[Code]]:
    """(prose lines with inline code removed, every code piece) of a markdown page."""
    prose, code = [], []
    fence, lang = None, ""
    for number, line in enumerate(page.read_text(encoding="utf-8").split("\n"), start=1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang = m.group(1), m.group(2).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            else:
                code.append(Code(page, number, line, lang))
            continue
        code += [Code(page, number, span, "inline") for span in re.findall(r"`([^`]+)`", line)]
        prose.append((number, re.sub(r"`[^`]*`", "``", line)))
    return prose, code


def _repo(page: Path) -> Path:
    """The repository a page belongs to: the folder holding pyproject.toml above it (the checks' own tests use
    a repository in a temp folder, so that no file is ever written into this checkout)."""
    return next(d for d in (page.parent, *page.parents) if (d / "pyproject.toml").is_file())


def _where(page: Path, line: int) -> str:
    return f"{page.relative_to(_repo(page))}:{line}"


# --- links -------------------------------------------------------------------------------------------

#: Pages other branches of this sprint add (the README links them already).  A link to one of them is
#: not an error while it is missing; once a page exists, test_pending_pages_are_still_pending fails until
#: it is taken off this list, so the list cannot hide a page that never came.
PENDING_PAGES: set[str] = set()

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def github_anchors(page: Path) -> set[str]:
    """The #anchors GitHub makes for a page's headings: lower case, punctuation dropped, spaces to '-'."""
    anchors, seen = set(), {}
    fence = None
    for line in page.read_text(encoding="utf-8").split("\n"):
        m = FENCE.match(line)
        if m and fence is None:
            fence = m.group(1)
            continue
        if fence is not None:
            fence = None if line.strip().startswith(fence) else fence
            continue
        h = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not h:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h.group(1))  # a link in a heading keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def link_problems(page: Path) -> list[str]:
    problems = []
    prose, _ = _page_parts(page)
    for number, line in prose:
        for target in LINK.findall(line):
            if re.match(r"^[a-zA-Z][\w+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            root = _repo(page)
            shown = dest.relative_to(root) if dest.is_relative_to(root) else dest
            if not dest.exists() and shown.as_posix() not in PENDING_PAGES:
                problems.append(f"{_where(page, number)}: link to {target!r}: {shown} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in github_anchors(dest):
                problems.append(f"{_where(page, number)}: link to {target!r}: {dest.name} has no heading with the "
                                f"anchor #{anchor}")
    return problems


# --- repository paths and pipelines --------------------------------------------------------------------

REPO_PATH = re.compile(r"(?<![\w./~$-])((?:pipelines|scripts|benchmarks|tests|examples|fairgptq|docs)/[\w./*=-]*)")


def _named_paths(page: Path) -> list[tuple[int, str]]:
    """Repository paths named in a page's code, relative to the repository root (commands run there)."""
    _, code = _page_parts(page)
    found = []
    for piece in code:
        if piece.lang not in SHELL_LANGS | {"inline", "yaml", "toml"}:
            continue
        for path in REPO_PATH.findall(piece.text):
            found.append((piece.line, path.rstrip(".")))
    return found


def path_problems(page: Path) -> list[str]:
    problems = []
    for line, path in _named_paths(page):
        root = _repo(page)
        if not (list(root.glob(path)) if "*" in path else (root / path).exists()):
            problems.append(f"{_where(page, line)}: {path} is named but does not exist in the repository")
    return problems


def pipeline_problems(page: Path) -> list[str]:
    """Every pipeline YAML a page names (globs too) validates against the schema (no model or data read)."""
    import yaml
    from fairgptq.core.errors import FairGPTQError
    from fairgptq.pipeline.loading import validate

    problems = []
    for line, path in _named_paths(page):
        if not re.search(r"\.ya?ml$", path) or not path.startswith("pipelines/"):
            continue
        root = _repo(page)
        for file in sorted(root.glob(path)) if "*" in path else [root / path]:
            if not file.is_file():
                continue  # path_problems reports it
            try:
                validate(yaml.safe_load(file.read_text(encoding="utf-8")), str(file), environment=False)
            except FairGPTQError as e:
                problems.append(f"{_where(page, line)}: {file.relative_to(root)} does not validate: {e}")
    return problems


# --- CLI commands and flags ----------------------------------------------------------------------------

COMMAND = re.compile(r"(?:^|(?<=[\s;&|(]))(?:[\w.~/-]*/)?fairgptq((?:\s+--debug)?)\s+([a-z][\w-]*)(.*)")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def command_problems(page: Path) -> list[str]:
    """``fairgptq CMD [SUB] ... --flag`` in a page's shell code and inline code: CMD, SUB and each flag exist."""
    from fairgptq.cli import _parser

    top = _parser()
    commands = _subparsers(top)
    problems = []
    _, code = _page_parts(page)
    for piece in code:
        if piece.lang not in SHELL_LANGS | {"inline"}:
            continue
        text = piece.text.split(" #")[0] if piece.lang != "inline" else piece.text
        for m in COMMAND.finditer(text):
            if re.search(r"(from|import)\s*$", text[: m.start(2)].rsplit("fairgptq", 1)[0]):
                continue  # `from fairgptq import ...` is Python, not the command
            name, rest = m.group(2), re.split(r"\s(?:\||&&|;)\s", m.group(3))[0]
            where = _where(page, piece.line)
            if name not in commands:
                problems.append(f"{where}: `fairgptq {name}`: the CLI has no command {name!r} "
                                f"(it has {', '.join(sorted(commands))})")
                continue
            parser = commands[name]
            nested = _subparsers(parser)
            words = rest.split()
            if nested and words and words[0] in nested:
                parser = nested[words[0]]
            elif nested and words and re.fullmatch(r"[a-z][\w-]*", words[0]) and words[0] not in nested:
                problems.append(f"{where}: `fairgptq {name} {words[0]}`: {name!r} has no subcommand {words[0]!r} "
                                f"(it has {', '.join(sorted(nested))})")
            allowed = _options(parser) | _options(top)
            for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                if flag not in allowed:
                    problems.append(f"{where}: `fairgptq {name} ... {flag}`: no such option of `fairgptq {name}` "
                                    f"(its options: {', '.join(sorted(o for o in _options(parser) if o.startswith('--')))})")
    return problems


@pytest.mark.parametrize("check", [link_problems, path_problems, pipeline_problems, command_problems],
                         ids=lambda f: f.__name__)
def test_every_page_says_only_what_is_true(check):
    problems = [p for page in PAGES for p in check(page)]
    assert not problems, "\n".join(problems)


def test_pending_pages_are_still_pending():
    arrived = sorted(p for p in PENDING_PAGES if (ROOT / p).exists())
    assert not arrived, f"{arrived} exist now: take them off PENDING_PAGES in tests/test_docs.py so their links are checked"


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each rule fails on a page that breaks it (a check that never fails checks nothing)."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "README.md").write_text("# Repo\n")
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "broken.md"
    page.write_text("# Broken page\n\n[gone](missing.md) [no anchor](../README.md#no-such-heading) [ok](#broken-page)\n\n"
                    "```bash\nfairgptq run pipelines/no_such.yaml --no-such-flag\nfairgptq frobnicate\n"
                    "fairgptq eval runs/x --limit 3   # --not-checked-in-a-comment\n```\n\n"
                    "Run `fairgptq compare a --baseline b --bogus` and `scripts/nothing.sh`.\n", encoding="utf-8")
    links, paths, commands = link_problems(page), path_problems(page), command_problems(page)
    assert len(links) == 2 and "missing.md" in links[0] and "#no-such-heading" in links[1]
    assert {p.split(": ")[1].split(" ")[0] for p in paths} == {"pipelines/no_such.yaml", "scripts/nothing.sh"}
    assert len(commands) == 3, commands
    assert any("--no-such-flag" in c for c in commands) and any("'frobnicate'" in c for c in commands)
    assert any("--bogus" in c for c in commands)


def test_a_pipeline_that_does_not_validate_is_reported(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "README.md").write_text("# x\n\n`fairgptq validate pipelines/invalid.yaml` and `pipelines/demo.yaml`\n")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "invalid.yaml").write_text(
        "name: x\nmodel: {name: smollm2}\nobjectives: [{name: fair_pairs, pairs: p, params: {alpha: -1}}]\n")
    (tmp_path / "pipelines" / "demo.yaml").write_text((ROOT / "pipelines" / "demo.yaml").read_text())
    problems = pipeline_problems(tmp_path / "README.md")
    assert len(problems) == 1 and "pipelines/invalid.yaml does not validate" in problems[0], problems


def test_github_anchors_follow_githubs_rule(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# The `likelihood` objective (issue 24)\n## Is a difference real? Item records, `compare`\n"
                    "## Results\n## Results\n```\n# not a heading\n```\n")
    assert github_anchors(page) == {"the-likelihood-objective-issue-24", "is-a-difference-real-item-records-compare",
                                    "results", "results-1"}


# --- code that runs ------------------------------------------------------------------------------------

#: What the test changes in the README's quickstart, and why: the tiny model instead of SmolLM2, its
#: own pairs (StereoSet's words are not in its vocabulary) and a few short calibration windows.
QUICKSTART_SUBSTITUTIONS = {
    'load_model("smollm2")': "load_model(TINY_MODEL)",
    'load_pairs("stereoset", split="calibration", n=256)': 'load_pairs("pair_file", path=TINY_PAIRS, category_col="category")',
    "calibration_windows(tok, n=64)": "calibration_windows(tok, n=4, seqlen=32)",
}


def _readme_python_quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_python_quickstart_runs_as_written(tmp_path, monkeypatch, real_data_dir):
    from tiny_model import save_tiny_llama, write_pair_file

    code = _readme_python_quickstart()
    for old, new in QUICKSTART_SUBSTITUTIONS.items():
        assert old in code, f"the README's quickstart no longer contains {old!r}; update QUICKSTART_SUBSTITUTIONS"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    scope = {"TINY_MODEL": str(save_tiny_llama(tmp_path / "tiny")),
             "TINY_PAIRS": str(write_pair_file(tmp_path / "pairs.jsonl"))}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md quickstart", "exec"), scope)
    assert 0 <= float(out.getvalue().strip().splitlines()[-1]) <= 100
    assert (tmp_path / "runs" / "mine" / "model" / "quantize_config.json").is_file()
    assert scope["checkpoint"].config["bits"] == 4


def _top_level_functions() -> list[str]:
    return sorted(n for n in fairgptq.__all__ if inspect.isfunction(getattr(fairgptq, n)))


def test_every_top_level_function_is_listed():
    assert {"load_model", "quantize_model", "export_checkpoint", "load_gptq_checkpoint", "evaluate", "text_batches",
            "calibration_windows", "load_pairs", "quantize_weight", "fair_update"} <= set(_top_level_functions())


@pytest.mark.parametrize("name", _top_level_functions())
def test_top_level_function_docstring_example_runs(name, tmp_path, real_data_dir):
    from tiny_model import save_tiny_llama

    function = getattr(fairgptq, name)
    assert ">>>" in (function.__doc__ or ""), f"fairgptq.{name} has no docstring example"
    globs = {"MODEL": str(save_tiny_llama(tmp_path / "tiny")), "OUT": str(tmp_path / "out")}
    tests = doctest.DocTestFinder(recurse=False).find(function, f"fairgptq.{name}", globs=globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.tries > 0 and runner.failures == 0, report.getvalue()
