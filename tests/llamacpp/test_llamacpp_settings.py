"""Registration, prefixes, the settings dataclass, and the plugin's use of the public interface only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import jarvis_llamacpp
from jarvis_core.api import (
    Availability,
    ChatRequest,
    ConfigError,
    Detection,
    EngineSpec,
    InferResult,
    Message,
    StartResult,
    StopResult,
    WarmupResult,
    create_time,
    hookimpl,
)
from jarvis_llamacpp.settings import LlamaCppSettings, default_models_dir

PACKAGE = Path(jarvis_llamacpp.__file__).parent

# A plugin imports everything it uses from this one module of the core (jarvis_core/api.py).
PUBLIC_MODULES = {"jarvis_core.api"}


def test_registers_the_engine_with_both_prefixes(llamacpp, make_session):
    session = make_session()
    spec = session.registry.engines["llamacpp"]
    assert spec.prefixes == ("lc_", "llamacpp:")
    assert spec.settings is LlamaCppSettings
    assert spec.plugin == "llamacpp"
    assert spec.one_model_at_a_time  # a server Jarvis starts serves one model; the next replaces it
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


class OtherEngine:
    """A second engine plugin, registered beside llama.cpp's."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def register_engines(self, register):
        register(EngineSpec(name="other", prefixes=("ot_",)))

    @hookimpl
    def detect(self, ctx):
        self.calls.append("detect")
        return Detection(engine=ctx.engine, installed=True, reachable=False, detail="other")

    @hookimpl
    def is_available(self, ctx, model):
        self.calls.append("is_available")
        return Availability(present=True, detail="other")

    @hookimpl
    def pull(self, ctx, model):
        self.calls.append("pull")
        return Availability(present=True, detail="other")

    @hookimpl
    def start(self, ctx, model):
        self.calls.append("start")
        return StartResult(address="http://127.0.0.1:9", started=False, detail="other")

    @hookimpl
    def warmup(self, ctx, model):
        self.calls.append("warmup")
        return WarmupResult(cold_start_s=0.0)

    @hookimpl
    def infer(self, ctx, model, request):
        self.calls.append("infer")
        return InferResult(stream=False, t_send=0, text="other")

    @hookimpl
    def stop(self, ctx):
        self.calls.append("stop")
        return StopResult(detail="other stopped")


def test_another_engines_calls_never_reach_this_plugin(llamacpp, use_plugin, make_session, tmp_path):
    """The hooks do not check ctx.engine: the core calls them for llamacpp only. Stopping another engine leaves
    our server running; its calls get its own answers."""
    other = use_plugin(OtherEngine(), "other")
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        session = make_session({"engines": {"llamacpp": {"models_dir": str(tmp_path / "models")}}})
        session.state.add("llamacpp", "process", pid=ours.pid, create_time=create_time(ours.pid), host="127.0.0.1",
                          port=1, address="http://127.0.0.1:1", model="x", alias="x")
        ref = session.resolve("ot_m")
        assert session.detect("other").detail == "other"
        assert session.is_available(ref).detail == session.pull(ref).detail == "other"
        assert session.start(ref).detail == "other" and session.warmup(ref).cold_start_s == 0.0
        assert session.infer(ref, ChatRequest([Message("user", "hi")])).text == "other"
        assert session.stop("other").detail == "other stopped"
        assert other.calls == ["detect", "is_available", "pull", "start", "warmup", "infer", "stop"]
        assert ours.poll() is None and len(session.state.records("llamacpp")) == 1
        assert session.stop("llamacpp").stopped and ours.wait(10) is not None  # our own stop does end it
    finally:
        ours.kill()
        ours.wait()


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


def test_names_used_are_exported():
    import jarvis_core.api

    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "jarvis_core.api":
                for alias in node.names:
                    assert alias.name in jarvis_core.api.__all__, \
                        f"{path.name} imports jarvis_core.api.{alias.name}, which is not exported"


def test_importing_the_plugin_stays_light():
    # psutil is not in the list: jarvis_core.api imports it (through the core's process helpers).
    code = ("import sys, jarvis_llamacpp; heavy = [m for m in ('httpx', 'llama_cpp') "
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
