"""Test isolation: installed entry points are never loaded, and every test gets its own state, config and cwd.

Plugins under test are registered inline with the `use_plugin` fixture and unregistered afterwards.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys._called_from_test = True  # jarvis_core.plugins.load_plugins() skips entry points under tests

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state folder, user config folder and working directory; no plugin allow-list, no debug."""
    monkeypatch.setenv("JARVIS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    for name in ("JARVIS_LOAD_PLUGINS", "JARVIS_DEBUG", "OLLAMA_HOST", "OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE",
                 "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "XDG_CACHE_HOME",
                 "DOCKER_HOST", "JARVIS_LLAMACPP_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing in a test may reach a model hub
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def use_plugin():
    """Register a plugin (module or object) for one test: `use_plugin(obj, "name")`."""
    from jarvis_core import plugins

    names: list[str] = []

    def register(plugin: object, name: str) -> object:
        assert plugins.register(plugin, name), f"plugin {name} was rejected"
        names.append(name)
        return plugin

    yield register
    for name in names:
        if plugins.pm.get_plugin(name) is not None:
            plugins.unregister(name)


@pytest.fixture
def make_session(tmp_path: Path):
    """Build a Session over the registered plugins with a given config (a dict, as config.yaml would hold)."""
    from jarvis_core.config import Config, build_settings
    from jarvis_core.progress import Progress
    from jarvis_core.session import Session
    from jarvis_core.state import StateStore

    def make(config: dict | None = None, **kwargs) -> Session:
        cfg = build_settings(Config, config or {}, source="test", path="", exclude=("source",))
        kwargs.setdefault("progress", Progress(io.StringIO()))
        return Session(cfg, state=StateStore(tmp_path / "state"), **kwargs)

    return make
