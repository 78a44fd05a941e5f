"""Fixtures for the llama.cpp plugin's tests.

Quick tests run a stand-in server (`fake_llama_server.py`) through a fake interpreter, so they need no llama.cpp.
Integration tests (`-m integration`) use the real `llama_cpp.server` in the interpreter running pytest and the real
SmolLM2 GGUF: `$JARVIS_TEST_GGUF`, or fetched once into `.cache/models` at the repository root. Missing
prerequisites skip those tests, except under `CI=true`, where they fail.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from llamacpp_helpers import HERE, REPO, SMOLLM2, missing_prerequisite, write_gguf  # noqa: E402,F401

import jarvis_llamacpp  # noqa: E402
from jarvis_llamacpp import runtime  # noqa: E402


@pytest.fixture(autouse=True)
def _llamacpp_isolation(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("JARVIS_LLAMACPP_MODELS", raising=False)
    runtime.forget()
    yield
    runtime.forget()


@pytest.fixture
def llamacpp(use_plugin):
    """The plugin, registered inline as a third party's would be."""
    return use_plugin(jarvis_llamacpp, "llamacpp")


@pytest.fixture
def session_for(llamacpp, make_session, tmp_path: Path):
    """`session_for(**settings)`: a Session whose `engines.llamacpp` section holds `settings`.

    Every server a session starts is stopped when the test ends, whatever happened.
    """
    sessions = []

    def make(timeouts: dict | None = None, **settings):
        settings.setdefault("models_dir", str(tmp_path / "models"))
        config = {"engines": {"llamacpp": settings}, "timeouts": {"start": 60, "stop": 10, **(timeouts or {})}}
        session = make_session(config)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.stop("llamacpp")


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    """An "interpreter" whose `-m llama_cpp.server` is the stand-in server, and whose probe reports version 0.0-fake."""
    if sys.platform == "win32":
        pytest.skip("the fake interpreter is a POSIX shell script")
    script = tmp_path / "fake-python"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then echo 0.0-fake; exit 0; fi\n'
        'if [ "$1" = "-m" ] && [ "$2" = "llama_cpp.server" ]; then shift 2; '
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(HERE / "fake_llama_server.py"))} "$@"; fi\n'
        'echo "fake-python: unexpected arguments: $*" >&2; exit 2\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def python_without_llamacpp(tmp_path: Path) -> str:
    """The real interpreter with site-packages switched off: `import llama_cpp` fails for real."""
    if sys.platform == "win32":
        pytest.skip("the wrapper is a POSIX shell script")
    script = tmp_path / "bare-python"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S -I "$@"\n')
    script.chmod(0o755)
    return str(script)


# --- integration prerequisites ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_python() -> str:
    """The interpreter running the tests, which must have llama-cpp-python[server]."""
    found = runtime.probe(sys.executable, refresh=True)
    if not found.installed:
        missing_prerequisite(f"llama_cpp.server is not importable by {sys.executable} ({found.problem}); "
                             f"run scripts/install-llamacpp.sh")
    return sys.executable


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF: `$JARVIS_TEST_GGUF`, or `.cache/models/` (fetched there once if absent)."""
    override = os.environ.get("JARVIS_TEST_GGUF")
    if override:
        path = Path(override)
        if not path.is_file():
            missing_prerequisite(f"JARVIS_TEST_GGUF={override} is not a file")
        return path
    folder = REPO / ".cache" / "models"
    path = folder / SMOLLM2.filename
    if path.is_file() and path.stat().st_size == SMOLLM2.size:
        return path
    fetcher = REPO / "scripts" / "fetch-smollm2.py"
    try:
        subprocess.run([sys.executable, str(fetcher), str(folder)], check=True, capture_output=True, text=True,
                       timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        missing_prerequisite(f"could not fetch {SMOLLM2.filename} with {fetcher}: {exc} {detail[-500:]}")
    if not path.is_file():
        missing_prerequisite(f"{fetcher} did not produce {path}")
    return path
