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
