"""The YAML snippets in the examples' docstrings validate against the schema (issue 25: one showed alpha outside params)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from fairgptq.pipeline.schema import ObjectiveSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_objective_entries_in_example_docstrings_are_valid(path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for line in re.findall(r"^\s*- (\{name: .*\})\s*$", path.read_text(), flags=re.M):
        entry = yaml.safe_load(line)
        if entry.get("name") in ("fair_pairs", "likelihood_pairs"):
            ObjectiveSpec.model_validate(entry)


PLUGINS_DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def test_every_plugin_example_in_the_docs_registers_from_the_one_import(tmp_path, monkeypatch):
    """Each python block of docs/plugins.md with a hook is a plugin module: it imports fairgptq.contract only,
    registers in a fresh registry, and the name it declares can be looked up (and made, where it takes no data)."""
    from fairgptq.registry import Registry
    blocks = [b for b in re.findall(r"```python\n(.*?)```", PLUGINS_DOC.read_text(), flags=re.S) if "@hookimpl" in b]
    assert len(blocks) == 5
    monkeypatch.syspath_prepend(str(tmp_path))
    for i, block in enumerate(blocks):
        imported = set(re.findall(r"^(?:from|import) (fairgptq[\w.]*)", block, flags=re.M))
        assert imported == {"fairgptq.contract"}, imported
        (tmp_path / f"doc_plugin_{i}.py").write_text(block)
        registry = Registry(entry_points=False)
        registry.register_module(f"doc_plugin_{i}")
        kind, name = next((info.kind, info.name) for info in registry.all() if info.origin == f"module doc_plugin_{i}")
        if kind in ("pair_sources", "backends", "objectives"):
            assert registry.create(kind, name) is not None
