"""The plugin framework: registration, the prefix table, lazy entry-point loading and its safety valves."""

from __future__ import annotations

import logging
import re
import sys
import textwrap
from pathlib import Path

import pytest

from jarvis_core import plugins
from jarvis_core.api import hookimpl
from jarvis_core.errors import DuplicatePrefixError, PluginError

from engines_fixture import EchoPlugin

REPO = Path(__file__).resolve().parents[2]


def test_registered_plugin_adds_its_engine_and_prefixes(use_plugin):
    use_plugin(EchoPlugin(), "echo-plugin")
    registry = plugins.get_registry()
    assert registry.engines["echo"].plugin == "echo-plugin"
    assert registry.prefixes == {"echo_": "echo", "ec:": "echo"}


def test_unregistering_removes_engine_and_prefixes(use_plugin):
    use_plugin(EchoPlugin(), "echo-plugin")
    plugins.unregister("echo-plugin")
    assert "echo" not in plugins.get_registry().engines


def test_duplicate_prefix_names_both_plugins(use_plugin):
    use_plugin(EchoPlugin("echo", ("echo_",)), "first-plugin")
    use_plugin(EchoPlugin("other", ("ECHO_",)), "second-plugin")
    with pytest.raises(DuplicatePrefixError) as exc:
        plugins.get_registry()
    assert "first-plugin" in str(exc.value) and "second-plugin" in str(exc.value)
    assert "'echo_'" in str(exc.value)


def test_duplicate_engine_name_is_an_error(use_plugin):
    use_plugin(EchoPlugin("echo", ("a_",)), "first-plugin")
    use_plugin(EchoPlugin("echo", ("b_",)), "second-plugin")
    with pytest.raises(PluginError, match="first-plugin.*second-plugin"):
        plugins.get_registry()


@pytest.mark.parametrize("prefix", ["", "ol", "_x", "a b_"])
def test_malformed_prefix_is_refused(use_plugin, prefix):
    use_plugin(EchoPlugin("echo", (prefix,)), "bad-prefix")
    with pytest.raises(PluginError):
        plugins.get_registry()


def test_misspelled_hook_is_skipped_with_one_warning(caplog):
    class Misspelled:
        @hookimpl
        def detetc(self, ctx):
            return None

    with caplog.at_level(logging.WARNING, logger="jarvis"):
        assert plugins.register(Misspelled(), "misspelled") is False
    assert plugins.pm.get_plugin("misspelled") is None
    assert len(caplog.records) == 1
    assert "'detetc'" in caplog.text and "misspelled" in caplog.text


def test_hookimpl_with_unknown_argument_is_skipped(caplog):
    class WrongArgs:
        @hookimpl
        def detect(self, ctx, bogus):
            return None

    with caplog.at_level(logging.WARNING, logger="jarvis"):
        assert plugins.register(WrongArgs(), "wrong-args") is False
    assert "wrong-args" in caplog.text
    assert plugins.pm.get_plugin("wrong-args") is None


def test_plugin_info_lists_hooks(use_plugin):
    use_plugin(EchoPlugin(), "echo-plugin")
    info = {i.name: hooks for i, hooks in plugins.plugin_info()}
    assert set(info["echo-plugin"]) == set(plugins.hook_names()) - {"register_commands", "infer_async"}  # optional


def test_every_hook_has_a_test():
    """Each hook needs a `test_hook_<name>` test somewhere under tests/."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").rglob("test_*.py"))
    missing = [h for h in plugins.hook_names() if not re.search(rf"def test_hook_{h}\b", text)]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_every_hook_is_documented():
    doc = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = [h for h in plugins.hook_names() if not re.search(rf"`{h}[`(]", doc)]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"


# --- entry points -------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_distributions(tmp_path, monkeypatch):
    """Installs (on sys.path) distributions `jarvis-good`, `jarvis-broken` whose plugins come through entry points."""
    site = tmp_path / "site"
    (site / "jarvis_good_plugin.py").parent.mkdir(parents=True)
    (site / "jarvis_good_plugin.py").write_text(textwrap.dedent("""
        from jarvis_core.api import EngineSpec, hookimpl

        @hookimpl
        def register_engines(register):
            register(EngineSpec("good", ("good_",)))

        # The lifecycle hooks an engine plugin must implement (never called in these tests).
        @hookimpl
        def detect(ctx): ...
        @hookimpl
        def is_available(ctx, model): ...
        @hookimpl
        def pull(ctx, model): ...
        @hookimpl
        def start(ctx, model): ...
        @hookimpl
        def warmup(ctx, model): ...
        @hookimpl
        def infer(ctx, model, request): ...
        @hookimpl
        def stop(ctx): ...
    """))
    (site / "jarvis_broken_plugin.py").write_text("raise ImportError('needs libfoo, which is missing')\n")
    for dist, module, ep in (("jarvis_good", "jarvis_good_plugin", "good"),
                             ("jarvis_broken", "jarvis_broken_plugin", "broken")):
        info = site / f"{dist}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[jarvis]\n{ep} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(sys, "_called_from_test", False)
    monkeypatch.setattr(plugins, "_loaded", False)
    before = {name for name, _ in plugins.pm.list_name_plugin()}
    yield
    for name, _ in list(plugins.pm.list_name_plugin()):
        if name not in before:
            plugins.unregister(name)
    for module in ("jarvis_good_plugin", "jarvis_broken_plugin"):
        sys.modules.pop(module, None)


def test_entry_point_plugins_load_lazily_and_broken_one_is_skipped(fake_distributions, monkeypatch, caplog):
    monkeypatch.setenv("JARVIS_LOAD_PLUGINS", "good,broken")
    assert "jarvis_good_plugin" not in sys.modules  # nothing is loaded at import time
    with caplog.at_level(logging.WARNING, logger="jarvis"):
        registry = plugins.get_registry()
    assert "good" in registry.engines
    assert [r.getMessage() for r in caplog.records if "broken" in r.getMessage()] == [
        "plugin 'broken' (jarvis-broken) failed to load and is skipped: ImportError: needs libfoo, which is missing"]
    info = {i.name: i for i, _ in plugins.plugin_info()}
    assert (info["good"].distribution, info["good"].version) == ("jarvis-good", "1.2.3")


def test_allow_list_by_distribution_name(fake_distributions, monkeypatch):
    monkeypatch.setenv("JARVIS_LOAD_PLUGINS", "jarvis-good")
    assert set(plugins.get_registry().engines) == {"good"}


def test_empty_allow_list_loads_no_plugin(fake_distributions, monkeypatch):
    monkeypatch.setenv("JARVIS_LOAD_PLUGINS", "")
    assert plugins.get_registry().engines == {}


def test_load_plugins_runs_once(fake_distributions, monkeypatch):
    monkeypatch.setenv("JARVIS_LOAD_PLUGINS", "good")
    plugins.load_plugins()
    plugins.unregister("good")
    plugins.load_plugins()  # already loaded: does not come back
    assert plugins.pm.get_plugin("good") is None
