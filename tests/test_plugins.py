"""The plugin system: built-ins, an external distribution found through entry points, named modules."""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from fairgptq.core.errors import PluginError
from fairgptq.registry import Registry

EXT_MODULE = '''
from fairgptq.hookspecs import hookimpl
from fairgptq.datasets_adapters.pairs import Pair


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
    Typo.fairgptq_pair_source = __import__("fairgptq.hookspecs", fromlist=["hookimpl"]).hookimpl(
        Typo.fairgptq_pair_source)
    with pytest.raises(PluginError, match="does not define"):
        reg.register(Typo(), name="typo")

    reg2 = Registry(entry_points=False)
    dup = type(sys)("dup_plugin")
    exec(textwrap.dedent('''
        from fairgptq.hookspecs import hookimpl
        @hookimpl
        def fairgptq_pair_sources():
            return {"stereoset": lambda: []}
    '''), dup.__dict__)
    with pytest.raises(PluginError, match="registered twice"):
        reg2.register(dup, name="dup_plugin")
    assert len(reg2.get("pair_sources", "stereoset").parameters()) > 0  # the refused plugin is gone


def test_create_passes_plugin_parameters_called_kind_and_name():
    """``kind`` and ``name`` of Registry.create are positional-only: a plugin may use both words."""
    from fairgptq.hookspecs import hookimpl

    from fairgptq.datasets_adapters.pairs import Pair

    class KindAndName:  # the parameters come back as a pair's two sentences (a pair source returns pairs)
        @hookimpl
        def fairgptq_pair_sources(self):
            return {"kind_and_name": lambda kind, name="x": [Pair(kind, name, "c")]}

    reg = Registry(entry_points=False)
    reg.register(KindAndName(), name="kind_and_name_plugin")
    made = reg.create("pair_sources", "kind_and_name", kind="intrasentence", name="n")
    assert [(p.stereo, p.anti) for p in made] == [("intrasentence", "n")]
