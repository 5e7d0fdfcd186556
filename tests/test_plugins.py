"""The plugin system: built-ins, an external distribution found through entry points, named modules."""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from fairgptq.core.errors import PluginError
from fairgptq.registry import Registry

EXT_MODULE = '''
from fairgptq.contract.hooks import hookimpl
from fairgptq.contract.pairs import Pair


def tiny_pairs(n: int = 3, word: str = "engineer"):
    """A pair source that lives outside fairgptq."""
    return [Pair(f"the man was an {word} {i}", f"the woman was an {word} {i}", "gender", source_id=f"ext:{i}")
            for i in range(n)]


@hookimpl
def fairgptq_pair_sources():
    return {"ext_pairs": tiny_pairs}
'''


@pytest.fixture
def external_distribution(tmp_path, monkeypatch):
    """An installed-looking distribution (dist-info + entry point) on sys.path, outside the package."""
    (tmp_path / "ext_pairs_plugin.py").write_text(EXT_MODULE)
    dist = tmp_path / "ext_pairs_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-pairs-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[fairgptq.pair_sources]\next = ext_pairs_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("ext_pairs_plugin", None)


def test_builtins_register_through_the_hooks():
    reg = Registry(entry_points=False)
    assert {"stereoset", "crows_pairs", "pair_file", "templates"} <= set(reg.names("pair_sources"))
    assert {"fair_pairs", "hbias_matrix"} <= set(reg.names("objectives"))
    assert "cpu" in reg.names("backends")
    info = reg.get("objectives", "fair_pairs")
    assert info.origin == "built-in" and "alpha=0.1" in info.parameters()


def test_entry_point_plugin_is_found_and_usable_by_name(external_distribution):
    reg = Registry()
    info = reg.get("pair_sources", "ext_pairs")
    assert info.origin == "ext-pairs-plugin 0.1 (entry point)"
    pairs = reg.create("pair_sources", "ext_pairs", n=2, word="nurse")
    assert [p.source_id for p in pairs] == ["ext:0", "ext:1"] and "nurse" in pairs[0].stereo
    obj = reg.create("objectives", "fair_pairs", pairs=pairs, alpha=0.2)
    assert obj.describe()["pairs"] == 2


def test_module_registered_by_name(tmp_path, monkeypatch):
    (tmp_path / "named_plugin_mod.py").write_text(EXT_MODULE.replace("ext_pairs", "named_pairs"))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry(entry_points=False)
    reg.register_module("named_plugin_mod")
    assert reg.get("pair_sources", "named_pairs").origin == "module named_plugin_mod"
    with pytest.raises(PluginError, match="could not be imported"):
        reg.register_module("no_such_plugin_module_xyz")
    sys.modules.pop("named_plugin_mod", None)


def test_unknown_names_and_parameters_are_explained():
    reg = Registry(entry_points=False)
    with pytest.raises(PluginError, match=r"unknown pair source 'stereosett'; available: .*stereoset"):
        reg.get("pair_sources", "stereosett")
    with pytest.raises(PluginError, match=r"parameters: .*alpha"):
        reg.create("objectives", "fair_pairs", pairs=[], alfa=0.1)
    with pytest.raises(PluginError, match="unknown plugin kind"):
        reg.get("kernels", "x")


def test_unknown_hook_and_duplicate_names_are_refused():
    reg = Registry(entry_points=False)

    class Typo:
        def fairgptq_pair_source(self):  # missing "s": not a hook fairgptq defines
            return {}
    Typo.fairgptq_pair_source = __import__("fairgptq.contract.hooks", fromlist=["hookimpl"]).hookimpl(
        Typo.fairgptq_pair_source)
    with pytest.raises(PluginError, match="does not define"):
        reg.register(Typo(), name="typo")

    reg2 = Registry(entry_points=False)
    dup = type(sys)("dup_plugin")
    exec(textwrap.dedent('''
        from fairgptq.contract.hooks import hookimpl
        @hookimpl
        def fairgptq_pair_sources():
            return {"stereoset": lambda: []}
    '''), dup.__dict__)
    with pytest.raises(PluginError, match="registered twice"):
        reg2.register(dup, name="dup_plugin")
    assert len(reg2.get("pair_sources", "stereoset").parameters()) > 0  # the refused plugin is gone


def test_create_passes_plugin_parameters_called_kind_and_name():
    """``kind`` and ``name`` of Registry.create are positional-only: a plugin may use both words."""
    from fairgptq.contract.hooks import hookimpl

    from fairgptq.contract.pairs import Pair

    class KindAndName:  # the parameters come back as a pair's two sentences (a pair source returns pairs)
        @hookimpl
        def fairgptq_pair_sources(self):
            return {"kind_and_name": lambda kind, name="x": [Pair(kind, name, "c")]}

    reg = Registry(entry_points=False)
    reg.register(KindAndName(), name="kind_and_name_plugin")
    made = reg.create("pair_sources", "kind_and_name", kind="intrasentence", name="n")
    assert [(p.stereo, p.anti) for p in made] == [("intrasentence", "n")]


SAME_NAME = """
from fairgptq.contract import Pair, hookimpl


def same_source():
    return [Pair("{word} is here.", "{word} is there.", "gender", source_id="{word}:0")]


@hookimpl
def fairgptq_pair_sources():
    return {{"same_source": same_source}}
"""


def test_two_pipelines_whose_plugins_name_one_source_alike_get_their_own_pairs(tmp_path, monkeypatch):
    from fairgptq.pipeline.build import load_pair_set
    from fairgptq.pipeline.schema import PairSetSpec
    from fairgptq.registry import pipeline_registry, scoped
    for word in ("alpha", "beta"):
        (tmp_path / f"same_name_{word}.py").write_text(SAME_NAME.format(word=word))
    monkeypatch.syspath_prepend(str(tmp_path))
    got = {}
    for word in ("alpha", "beta"):
        registry = pipeline_registry([f"same_name_{word}"])
        with scoped(registry):
            got[word] = load_pair_set(PairSetSpec(source="same_source"), registry).pairs
    assert got["alpha"][0].stereo == "alpha is here." and got["beta"][0].stereo == "beta is here."


def _process_plugins() -> set[str]:
    from fairgptq.registry import _process_registry
    return {name for name, _ in _process_registry().pm.list_name_plugin()}


def test_rewriting_a_saved_run_leaves_the_process_registry_as_it_was(tmp_path, monkeypatch):
    """``fairgptq report --rewrite`` reads each saved config's plugins (config_is_plain -> registry_for)."""
    from fairgptq import cli
    from fairgptq.pipeline.objective_settings import config_is_plain, registry_for
    (tmp_path / "saved_run_plugin.py").write_text(EXT_MODULE.replace("ext_pairs", "saved_pairs"))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = _process_plugins()
    assert "saved_pairs" in registry_for(["saved_run_plugin"]).names("pair_sources")
    assert not config_is_plain({"plugins": ["saved_run_plugin"],
                                "objectives": [{"name": "fair_pairs", "params": {"alpha": 0.1}}]})
    assert cli.main(["plugins", "--module", "saved_run_plugin"]) == 0
    assert _process_plugins() == before and "saved_run_plugin" not in before


def test_lookups_are_cached_until_a_plugin_registers(tmp_path, monkeypatch):
    from fairgptq.registry import Registry
    (tmp_path / "cached_plugin.py").write_text(EXT_MODULE.replace("ext_pairs", "cached_pairs"))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(entry_points=False)
    calls = []
    real = registry._collect
    monkeypatch.setattr(registry, "_collect", lambda: calls.append(1) or real())
    registry.names("pair_sources"), registry.get("objectives", "fair_pairs")
    assert calls == []  # asked once when the registry was built
    registry.register_module("cached_plugin")
    assert "cached_pairs" in registry.names("pair_sources") and registry.names("objectives")
    assert calls == [1]

