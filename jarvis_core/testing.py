"""Test helpers for plugin authors: an isolated Jarvis, a plugin registered for one test, a Session over it, and a
stand-in HTTP server on 127.0.0.1.

Use it as a pytest plugin, in your `conftest.py`:

    pytest_plugins = ["jarvis_core.testing"]

which gives the fixtures `jarvis_isolated` (own state folder, user config folder and working directory; no
installed plugin loaded by accident), `use_plugin` (`use_plugin(my_plugin_module, "name")`, unregistered after the
test) and `make_session` (`make_session({"engines": {...}})`, a Session as config.yaml would configure it). Outside
pytest, `registered`, `isolated_environment`, `session` and `serve` do the same as context managers and functions.
`infer_async` answers one request through an engine's `infer_async` hook, as load levels send it.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import plugins
from .config import Config, build_settings
from .progress import Progress
from .session import Session
from .state import StateStore

# Under tests, jarvis_core.plugins.load_plugins() never loads installed entry points: each test registers what it uses.
sys._called_from_test = True  # type: ignore[attr-defined]

#: Environment variables that would let the machine's own set-up leak into a test.
ISOLATED_VARIABLES = ("JARVIS_LOAD_PLUGINS", "JARVIS_DEBUG", "JARVIS_TRACE_PLUGINS", "OLLAMA_HOST", "OLLAMA_MODELS",
                      "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                      "XDG_CACHE_HOME", "DOCKER_HOST", "JARVIS_LLAMACPP_MODELS")


def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point Jarvis's state and config at `tmp_path`, clear variables that would leak the machine's set-up, keep
    model hubs offline, and make `tmp_path` the working directory."""
    monkeypatch.setenv("JARVIS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    for name in ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing in a test may reach a model hub
    monkeypatch.chdir(tmp_path)
    return tmp_path


@contextmanager
def registered(plugin: object, name: str) -> Iterator[object]:
    """Register a plugin (module or object) for the duration of the block."""
    if not plugins.register(plugin, name):
        raise AssertionError(f"plugin {name} was rejected (see the warning logged)")
    try:
        yield plugin
    finally:
        if plugins.pm.get_plugin(name) is not None:
            plugins.unregister(name)


def session(config: dict[str, Any] | None = None, *, state_dir: Path, **kwargs: Any) -> Session:
    """A Session over the registered plugins, configured as config.yaml holding `config` would configure it;
    progress goes to a string buffer unless `progress=` says otherwise."""
    cfg = build_settings(Config, config or {}, source="test", path="", exclude=("source",))
    kwargs.setdefault("progress", Progress(io.StringIO()))
    return Session(cfg, state=StateStore(state_dir), **kwargs)


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> Iterator[str]:
    """Run a stand-in HTTP server (a `BaseHTTPRequestHandler` subclass) on a free port of `host` in a thread;
    yields its base URL (`http://127.0.0.1:PORT`) and shuts it down afterwards."""
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def infer_async(session: Session, model: Any, request: Any) -> Any:
    """One request through the engine's `infer_async` hook, on an event loop of its own (closed afterwards, with its
    connections), as a load level sends it. Fails the test when the engine's plugin has no `infer_async`."""
    import asyncio

    from .aio import close_sessions

    send = session.async_infer(model)
    assert send is not None, f"the {model.engine} plugin implements no infer_async"

    async def one() -> Any:
        try:
            return await send(request)
        finally:
            await close_sessions()

    return asyncio.run(one())


# --- pytest fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture
def jarvis_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state folder, user config folder and working directory (see `isolated_environment`)."""
    return isolated_environment(tmp_path, monkeypatch)


@pytest.fixture
def use_plugin() -> Iterator[Any]:
    """Register a plugin (module or object) for one test: `use_plugin(obj, "name")` returns `obj`."""
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
def make_session(tmp_path: Path) -> Any:
    """Build a Session over the registered plugins with a given config (a dict, as config.yaml would hold)."""

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> Session:
        return session(config, state_dir=Path(os.environ.get("JARVIS_STATE_DIR") or tmp_path / "state"), **kwargs)

    return make
