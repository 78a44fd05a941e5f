"""Fixtures for `jarvis run` tests: a campaign folder with the engine stand-ins Jarvis itself starts.

- `campaign`: a working folder (the test's tmp_path, which is also the cwd) holding
  - a fake `ollama` program on PATH (`tests/standins/bin/ollama`, its `serve` runs the Ollama stand-in with one child
    runner process per loaded model), a free port in `OLLAMA_HOST`, models on disk in `OLLAMA_MODELS`
    (`campaign.ollama_model(...)`), stand-in behaviour in `JARVIS_STANDIN_OLLAMA_CONFIG` (`campaign.ollama_config(...)`);
  - a fake `vllm` program (`vllm serve MODEL ...` runs `python -m tests.standins.openai_server`) for the vLLM plugin's
    process runtime, and a Hugging Face hub cache (`HF_HUB_CACHE`) with models in it (`campaign.hf_model(...)`);
  - `config.yaml` (`campaign.config(...)`) and `test_setups.yaml` (`campaign.setups(...)`);
  - `campaign.run(...)`: `jarvis run` in-process with CliRunner, the three engine plugins registered inline;
  - `campaign.spawn(...)`: `.venv/bin/jarvis ...` as a subprocess (installed plugins, restricted by
    JARVIS_LOAD_PLUGINS), for the signal tests.
- `nothing_left_running` (used by `campaign`): every process started during a test carries a marker in its
  environment; one still alive when the test ends fails it (and is killed), so nothing Jarvis starts may survive a
  test.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from jarvis_core.api import close_shared

import yaml

import process_marks
from jarvis_core.processes import free_port  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `tests.standins` is imported as a package from the repository root
    sys.path.insert(0, str(REPO))
for _plugin in ("jarvis_ollama", "jarvis_vllm", "jarvis_llamacpp"):
    try:
        __import__(_plugin)
    except ImportError:  # not pip-installed: use the source tree
        sys.path.insert(0, str(REPO / "plugins" / _plugin))

import jarvis_llamacpp.runtime  # noqa: E402
import jarvis_ollama  # noqa: E402
import jarvis_vllm  # noqa: E402

from tests.standins import ollama_models  # noqa: E402
from tests.standins.ollama_server import BIN_OLLAMA  # noqa: E402

MARK = "JARVIS_RUN_TEST_MARK"
VENV_BIN = Path(sys.executable).parent
JARVIS_EXE = VENV_BIN / "jarvis"
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000005000157a2a2c30000000049454e44ae426082")




# --- nothing survives a test ------------------------------------------------------------------------------------------


def marked_processes(mark: str) -> list[psutil.Process]:
    return process_marks.marked_processes(MARK, mark)


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline()[:6])}"
    except psutil.Error:
        return f"{proc.pid} ?"


@pytest.fixture
def nothing_left_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every process started from now on carries the test's marker; one still alive at the end fails the test."""
    mark = str(tmp_path)
    monkeypatch.setenv(MARK, mark)
    jarvis_llamacpp.runtime.forget()
    yield mark
    close_shared()  # the pooled clients of every engine
    jarvis_llamacpp.runtime.forget()
    deadline = time.monotonic() + 5.0  # runners notice their server's end within a moment
    left = marked_processes(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = marked_processes(mark)
    if left:
        described = [describe(p) for p in left]
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        pytest.fail(f"processes started during the test survived it: {described}", pytrace=False)


# --- the campaign folder ------------------------------------------------------------------------------------------------


class Campaign:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir()
        # the fake `ollama`, run by this interpreter whatever `python3` is on PATH
        ollama = self.bin_dir / "ollama"
        ollama.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{BIN_OLLAMA}" "$@"\n')
        ollama.chmod(0o755)
        # the fake `vllm`: `vllm serve MODEL ...` runs the vLLM-like stand-in with the same arguments
        self.vllm_exe = self.bin_dir / "vllm"
        self.vllm_exe.write_text(f'#!/bin/sh\n[ "$1" = serve ] && shift\ncd "{REPO}"\n'
                                 f'exec "{sys.executable}" -m tests.standins.openai_server "$@"\n')
        self.vllm_exe.chmod(0o755)
        self.models_dir = root / "ollama-models"
        self.models_dir.mkdir()
        self.hub = root / "hf-hub"
        self.hub.mkdir()
        self.ollama_port = free_port()
        self.vllm_port = free_port()
        self.standin_config = root / "standin-ollama.json"
        self.ollama_config()
        self.state_dir = root / "state"
        monkeypatch.setenv("PATH", f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{self.ollama_port}")
        monkeypatch.setenv("OLLAMA_MODELS", str(self.models_dir))
        monkeypatch.setenv("JARVIS_STANDIN_OLLAMA_CONFIG", str(self.standin_config))
        monkeypatch.setenv("HF_HUB_CACHE", str(self.hub))
        monkeypatch.setenv("JARVIS_STATE_DIR", str(self.state_dir))
        self.config()

    # -- engines --

    @property
    def ollama_url(self) -> str:
        return f"http://127.0.0.1:{self.ollama_port}"

    def ollama_model(self, name: str, **fields: Any) -> None:
        ollama_models.write_model(self.models_dir, name, **fields)

    def ollama_config(self, **config: Any) -> None:
        """What the fake `ollama serve` does (see tests/standins/ollama_server.py: faults, token_delay, ...)."""
        config.setdefault("load_seconds", 0.02)
        config.setdefault("token_delay", 0.001)
        config.setdefault("prompt_eval_delay", 0.001)
        self.standin_config.write_text(json.dumps(config))

    def hf_model(self, repo_id: str) -> None:
        """A complete model in the hub cache layout huggingface_hub writes (refs/main, snapshots, blobs)."""
        revision = hashlib.sha1(repo_id.encode()).hexdigest()
        folder = self.hub / ("models--" + repo_id.replace("/", "--"))
        snapshot = folder / "snapshots" / revision
        (folder / "blobs").mkdir(parents=True)
        snapshot.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(revision)
        for name, data in (("config.json", b'{"model_type": "llama"}'), ("model.safetensors", b"\0" * 64)):
            blob = folder / "blobs" / hashlib.sha256(data + name.encode()).hexdigest()
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / name)

    # -- files --

    def config(self, vllm_models: dict[str, list[str]] | None = None, **extra: Any) -> Path:
        """config.yaml: vLLM's process runtime with the fake `vllm`; llama.cpp with an interpreter that is not there
        (so `lc_` models are unavailable) unless `extra` says otherwise."""
        data: dict[str, Any] = {
            "output_dir": str(self.root / "results"),
            "timeouts": {"start": 30, "stop": 10, "request": 30},
            "engines": {
                "vllm": {"runtime": "process", "executable": str(self.vllm_exe), "port": self.vllm_port,
                         "gpus": "none", "stop_timeout": 5,
                         "models": {name: {"extra_args": args} for name, args in (vllm_models or {}).items()}},
                "llamacpp": {"python": str(self.root / "no-such-python"), "models_dir": str(self.root / "gguf")},
            },
        }
        for key, value in extra.items():
            if key == "engines":
                for engine, section in value.items():
                    data["engines"][engine] = section
            else:
                data[key] = value
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def setups(self, text: str | dict[str, Any], name: str = "test_setups.yaml") -> Path:
        path = self.root / name
        path.write_text(text if isinstance(text, str) else yaml.safe_dump(text, sort_keys=False))
        return path

    def image(self, name: str = "pixel.png") -> Path:
        path = self.root / name
        path.write_bytes(PNG_1PX)
        return path

    # -- running Jarvis --

    def run(self, *args: str) -> Any:
        """`jarvis <args>` in-process (CliRunner); the plugins are registered inline by the `campaign` fixture."""
        from click.testing import CliRunner

        from jarvis_core.cli import cli

        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO)
        env.setdefault("JARVIS_LOAD_PLUGINS", "ollama,vllm,llamacpp")
        env.update(extra)
        return env

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """`.venv/bin/jarvis <args>` as a subprocess, its output in `jarvis.out`."""
        if not JARVIS_EXE.is_file():
            pytest.skip(f"{JARVIS_EXE} is not installed (pip install -e . in the virtual environment)")
        self.out_file = self.root / "jarvis.out"
        with open(self.out_file, "ab") as out:
            return subprocess.Popen([str(JARVIS_EXE), *args], cwd=self.root, env=self.env(**env), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.out_file.read_text(errors="replace") if hasattr(self, "out_file") else ""

    def jarvis(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        if not JARVIS_EXE.is_file():
            pytest.skip(f"{JARVIS_EXE} is not installed (pip install -e . in the virtual environment)")
        return subprocess.run([str(JARVIS_EXE), *args], cwd=self.root, env=self.env(**env), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@contextmanager
def plugins_registered() -> Iterator[None]:
    """The three engine plugins registered inline (entry points are not loaded under tests)."""
    from jarvis_core import plugins

    names = []
    try:
        for module, name in ((jarvis_ollama, "ollama"), (jarvis_vllm, "vllm"), (jarvis_llamacpp, "llamacpp")):
            assert plugins.register(module, name), f"plugin {name} was rejected"
            names.append(name)
        yield
    finally:
        for name in names:
            if plugins.pm.get_plugin(name) is not None:
                plugins.unregister(name)


def clean_up_after(camp: Campaign) -> None:
    """Whatever a failed test left recorded (a run that died mid-way) is cleaned up the way users would."""
    from jarvis_core.cleanup import clean_leftovers
    from jarvis_core.config import load_config
    from jarvis_core.session import Session
    from jarvis_core.state import StateStore

    if StateStore(camp.state_dir).records():
        session = Session(load_config(str(camp.root / "config.yaml")), state=StateStore(camp.state_dir))
        clean_leftovers(session)
        for engine in ("ollama", "vllm", "llamacpp"):
            try:
                session.stop(engine)
            except Exception:  # noqa: BLE001 - best effort; the process check reports what survived
                pass


def clear_engine_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HOME", "HF_TOKEN", "JARVIS_LLAMACPP_MODELS", "JARVIS_LOAD_PLUGINS", "JARVIS_DEBUG",
                 "DOCKER_HOST", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def campaign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_left_running: str) -> Iterator[Campaign]:
    clear_engine_env(monkeypatch)
    with plugins_registered():
        camp = Campaign(tmp_path, monkeypatch)
        try:
            yield camp
        finally:
            clean_up_after(camp)


@contextmanager
def module_campaign(root: Path) -> Iterator[Campaign]:
    """A campaign shared by the tests of a module (its own folder, environment and plugins); on the way out, what
    the run left recorded is cleaned up, and a process it started that still runs fails the module."""
    with pytest.MonkeyPatch.context() as mp:
        clear_engine_env(mp)
        mp.chdir(root)
        mp.setenv("XDG_CONFIG_HOME", str(root / "xdg-config"))
        mp.setenv("XDG_STATE_HOME", str(root / "xdg-state"))
        for name in ("OLLAMA_HOST", "OLLAMA_MODELS"):
            mp.delenv(name, raising=False)
        mp.setenv(MARK, str(root))
        with plugins_registered():
            camp = Campaign(root, mp)
            try:
                yield camp
            finally:
                clean_up_after(camp)
                close_shared()
        deadline = time.monotonic() + 5.0
        left = marked_processes(str(root))
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = marked_processes(str(root))
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        assert not left, f"processes started by the shared campaign survived it: {[describe(p) for p in left]}"


# --- reading what a run wrote -------------------------------------------------------------------------------------------


def records(results: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]


def samples(results: Path) -> list[dict[str, Any]]:
    return [r for r in records(results) if r.get("type") == "sample"]


def cells(results: Path) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in samples(results):
        found.setdefault((r["setup"], r["model"], r["test"]), []).append(r)
    return found


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def timed_samples(results: Path) -> list[dict[str, Any]]:
    """Samples of requests that were actually sent (a repetition number), from a file that may be torn."""
    if not results.is_file():
        return []
    found = []
    for line in results.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("type") == "sample" and record.get("repetition") is not None:
            found.append(record)
    return found


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(timeout=10)


# Test modules import the helpers above as `tests.run.conftest`, never as a bare `conftest` (other folders have a
# conftest.py too, and which one a bare name means depends on the order pytest loaded them): that name is this module.
sys.modules.setdefault("tests.run.conftest", sys.modules[__name__])
