"""Registration, prefixes, the settings dataclass, and the plugin's use of the public interface only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import jarvis_llamacpp
from jarvis_core.errors import ConfigError
from jarvis_llamacpp.settings import LlamaCppSettings, default_models_dir

PACKAGE = Path(jarvis_llamacpp.__file__).parent

# What the core's author declares public: the top-level exports and these modules (docs/plugins.md).
PUBLIC_MODULES = {"jarvis_core", "jarvis_core.errors", "jarvis_core.processes", "jarvis_core.openai_api",
                  "jarvis_core.http", "jarvis_core.progress", "jarvis_core.state"}


def test_registers_the_engine_with_both_prefixes(llamacpp, make_session):
    session = make_session()
    spec = session.registry.engines["llamacpp"]
    assert spec.prefixes == ("lc_", "llamacpp:")
    assert spec.settings is LlamaCppSettings
    assert spec.plugin == "llamacpp"
    for model_id in ("lc_smollm2-135m", "llamacpp:smollm2-135m", "LC_smollm2-135m", "LlamaCpp:smollm2-135m"):
        ref = session.resolve(model_id)
        assert (ref.engine, ref.name, ref.canonical) == ("llamacpp", "smollm2-135m", "lc_smollm2-135m")
    ref = session.resolve("lc_/models/x.gguf#stream")
    assert (ref.name, ref.flags.stream, ref.canonical) == ("/models/x.gguf", True, "lc_/models/x.gguf#stream")


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = LlamaCppSettings()
    assert default_models_dir().parts[-3:] == ("jarvis", "models", "gguf")
    assert settings.models_dir == tmp_path / "cache" / "jarvis" / "models" / "gguf"
    assert settings.python == sys.executable
    assert (settings.host, settings.n_ctx, settings.n_threads, settings.extra_args) == ("127.0.0.1", 2048, None, [])


def test_config_section_is_typed_and_expanded(llamacpp, make_session, tmp_path):
    session = make_session({"engines": {"llamacpp": {
        "models_dir": "~/gguf", "python": "~/venv/bin/python", "n_ctx": 4096, "n_threads": 2,
        "extra_args": ["--n_batch", "256"]}}})
    settings = session.context("llamacpp").settings
    assert settings.models_dir == Path.home() / "gguf"
    assert settings.python == str(Path.home() / "venv/bin/python")
    assert (settings.n_ctx, settings.n_threads, settings.extra_args) == (4096, 2, ["--n_batch", "256"])


@pytest.mark.parametrize(("section", "message"), [
    ({"n_ctx": "big"}, "engines.llamacpp.n_ctx"),
    ({"n_ctx": 0}, "n_ctx must be a positive"),
    ({"n_threads": 0}, "n_threads must be a positive"),
    ({"host": ""}, "host must not be empty"),
    ({"extra_args": "--n_batch 256"}, "engines.llamacpp.extra_args"),
    ({"model_dir": "/x"}, "unknown setting 'model_dir'"),
])
def test_bad_settings_name_the_key(llamacpp, make_session, section, message):
    session = make_session({"engines": {"llamacpp": section}})
    with pytest.raises(ConfigError, match=message):
        session.context("llamacpp")


def test_environment_wins_over_config_for_the_models_folder(llamacpp, make_session, monkeypatch, tmp_path):
    monkeypatch.setenv("JARVIS_LLAMACPP_MODELS", str(tmp_path / "from-env"))
    session = make_session({"engines": {"llamacpp": {"models_dir": str(tmp_path / "from-config")}}})
    assert session.context("llamacpp").settings.models_dir == tmp_path / "from-env"


def test_hooks_answer_only_for_their_engine(llamacpp, make_session):
    ctx = make_session().context("llamacpp")
    ctx.engine = "ollama"
    ref = make_session().resolve("lc_x")
    for hook, args in (("detect", ()), ("is_available", (ref,)), ("pull", (ref,)), ("start", (ref,)),
                       ("warmup", (ref,)), ("infer", (ref, None)), ("stop", ())):
        assert getattr(jarvis_llamacpp, hook)(ctx, *args) is None, hook


def _jarvis_core_imports() -> set[str]:
    """Every jarvis_core module the plugin's source imports (`from jarvis_core import processes` counts)."""
    import importlib.util

    found = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jarvis_core":
                found.add(node.module)
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    if importlib.util.find_spec(node.module).submodule_search_locations and \
                            importlib.util.find_spec(name) is not None:
                        found.add(name)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "jarvis_core")
    return found


def test_uses_only_the_public_interface():
    used = _jarvis_core_imports()
    assert used, "the plugin should import jarvis_core"
    assert used <= PUBLIC_MODULES, f"private jarvis_core modules used: {sorted(used - PUBLIC_MODULES)}"


def test_top_level_names_used_are_exported():
    import jarvis_core

    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "jarvis_core":
                for alias in node.names:
                    assert alias.name in jarvis_core.__all__ or f"jarvis_core.{alias.name}" in PUBLIC_MODULES, \
                        f"{path.name} imports jarvis_core.{alias.name}, which is not exported"


def test_importing_the_plugin_stays_light():
    code = ("import sys, jarvis_llamacpp; heavy = [m for m in ('httpx', 'llama_cpp', 'psutil') "
            "if m in sys.modules]; print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(PACKAGE.parent)}, timeout=60)
    assert done.stdout.strip() == ""


def test_no_submodule_shadows_a_hook():
    """`from .pull import x` inside the `pull` hook would replace the hook with the submodule on the package."""
    import importlib.util

    from jarvis_core.plugins import hook_names

    clashes = [name for name in hook_names() if importlib.util.find_spec(f"jarvis_llamacpp.{name}") is not None]
    assert clashes == []
