"""Fixtures for the Ollama plugin's tests, over the Ollama stand-ins in `tests/standins/`.

- `standin(...)`: an in-process `OllamaStandin` on a free port (a server Jarvis did not start).
- `fake_ollama`: the stand-in `ollama` executable (`tests/standins/bin/ollama`) on PATH; its `serve` runs the stand-in
  server in a real child process, with one "runner" child per loaded model, configured by a JSON file
  (`fake_ollama.configure(...)`).
- `session_for(...)`: a Session with the plugin registered and `engines.ollama` pointing at a free port; every
  session is stopped when the test ends.
- autouse `no_leftover_processes`: every process started during a test carries a marker in its environment; any such
  process still alive at the end fails the test (and is killed), so nothing Jarvis starts can survive a test.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

import process_marks
from jarvis_core.processes import free_port  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `tests.standins` is imported as a package from the repository root
    sys.path.insert(0, str(REPO))
try:
    import jarvis_ollama
except ImportError:  # not pip-installed: test it from the source tree
    sys.path.insert(0, str(REPO / "plugins" / "jarvis_ollama"))
    import jarvis_ollama

from tests.standins.ollama_server import BIN_OLLAMA, OllamaStandin  # noqa: E402

MARK = "JARVIS_OLLAMA_TEST_MARK"




def marked_processes(mark: str) -> list[psutil.Process]:
    return process_marks.marked_processes(MARK, mark)


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mark = str(tmp_path)
    monkeypatch.setenv(MARK, mark)
    yield mark
    deadline = time.monotonic() + 3.0  # a runner that notices its server's death exits within a moment
    left = marked_processes(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = marked_processes(mark)
    if left:
        described = [f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in left if p.is_running()]
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        if described:
            pytest.fail(f"processes started during the test survived it: {described}")


@pytest.fixture
def ollama(use_plugin):
    """The plugin, registered inline."""
    return use_plugin(jarvis_ollama, "ollama")


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def standin(models_dir: Path):
    """`standin(models=[...], **options)`: a started in-process stand-in (models on its disk by default)."""
    started: list[OllamaStandin] = []

    def make(models=("qwen2.5:0.5b",), **options) -> OllamaStandin:
        options.setdefault("models_dir", models_dir)
        server = OllamaStandin(models=list(models), **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


class FakeOllama:
    """The stand-in `ollama` program on PATH, configured through `JARVIS_STANDIN_OLLAMA_CONFIG`."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin_dir = tmp_path / "bin"
        self.bin_dir.mkdir()
        link = self.bin_dir / ("ollama.cmd" if sys.platform == "win32" else "ollama")
        if sys.platform == "win32":
            link.write_text(f'@"{sys.executable}" "{BIN_OLLAMA}" %*\n')
        else:
            # a wrapper, so the stand-in runs under this interpreter whatever `python3` is on PATH
            link.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{BIN_OLLAMA}" "$@"\n')
            link.chmod(0o755)
        self.path = link
        self.config_path = tmp_path / "standin-ollama.json"
        self.configure()
        monkeypatch.setenv("PATH", f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("JARVIS_STANDIN_OLLAMA_CONFIG", str(self.config_path))

    def configure(self, **config) -> None:
        config.setdefault("load_seconds", 0.05)
        config.setdefault("token_delay", 0.002)
        self.config_path.write_text(json.dumps(config))


@pytest.fixture
def fake_ollama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOllama:
    return FakeOllama(tmp_path, monkeypatch)


@pytest.fixture
def no_ollama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No `ollama` anywhere: an empty PATH and no installer default locations."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    from jarvis_ollama import server

    monkeypatch.setattr(server, "default_locations", lambda: [])


@pytest.fixture
def session_for(ollama, make_session, models_dir: Path):
    """`session_for(port=None, timeouts=None, **settings)`: a Session whose `engines.ollama` points at `port` (a free
    one by default) with `models_dir`; stopped at the end of the test whatever happened."""
    sessions = []

    def make(port: int | None = None, timeouts: dict | None = None, progress=None, keep_loaded: bool = False,
             **settings):
        settings.setdefault("url", f"http://127.0.0.1:{port or free_port()}")
        settings.setdefault("models_dir", str(models_dir))
        config = {"engines": {"ollama": settings}, "timeouts": {"start": 20, "stop": 10, **(timeouts or {})}}
        kwargs = {"keep_loaded": keep_loaded}
        if progress is not None:
            kwargs["progress"] = progress
        session = make_session(config, **kwargs)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        try:
            session.stop("ollama")
        except Exception:  # noqa: BLE001 - the test itself reports what went wrong
            pass


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def console():
    """A Progress writing to a buffer (read it with `console.stream.getvalue()`)."""
    from jarvis_core.progress import Progress

    return Progress(io.StringIO())


@pytest.fixture
def ref():
    """`ref(session, "qwen2.5:0.5b")`: the ModelRef of an Ollama model."""
    return lambda session, name: session.resolve(f"ol_{name}")
