"""detect and is_available: they start nothing, and tell the user what is there and how to fix what is not."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.standins import ollama_models


@pytest.fixture
def not_ollama(port):
    """A program that is not Ollama holding the port: a plain HTTP server in a child process."""
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from jarvis_core.processes import port_open

    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.02)
    yield proc
    proc.terminate()
    proc.wait(10)


def test_detect_running_server(session_for, standin, fake_ollama):
    server = standin(version="0.12.9")
    detection = session_for(port=server.port).detect("ollama")
    assert detection.reachable and detection.installed
    assert detection.version == "0.12.9"
    assert detection.address == server.url
    assert not detection.started_by_jarvis
    assert "0.12.9" in detection.detail and str(fake_ollama.bin_dir) in detection.detail


def test_detect_honours_ollama_host(session_for, standin, monkeypatch):
    server = standin()
    monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{server.port}")
    detection = session_for(port=1).detect("ollama")  # config says port 1; the environment wins
    assert detection.reachable and detection.address == f"http://127.0.0.1:{server.port}"


def test_detect_installed_but_down(session_for, fake_ollama):
    session = session_for()
    detection = session.detect("ollama")
    assert detection.installed and not detection.reachable
    assert "starts one when needed" in detection.detail
    assert detection.version == "0.12.3" and "version 0.12.3" in detection.detail  # `ollama --version`
    assert session.state.records() == []  # nothing started


def test_detect_not_installed_says_how_to_install(session_for, no_ollama):
    detection = session_for().detect("ollama")
    assert not detection.installed and not detection.reachable
    assert "https://ollama.com/download" in detection.detail
    assert "curl -fsSL https://ollama.com/install.sh | sh" in detection.detail
    assert "engines.ollama.executable" in detection.detail
    assert "\n" not in detection.detail


def test_detect_configured_executable_missing(session_for, tmp_path):
    detection = session_for(executable=str(tmp_path / "nope" / "ollama")).detect("ollama")
    assert not detection.installed
    assert "nope" in detection.detail and "engines.ollama.executable" in detection.detail


def test_detect_port_held_by_another_program(session_for, not_ollama, port, fake_ollama):
    detection = session_for(port=port).detect("ollama")
    assert not detection.reachable
    assert f"Port {port}" in detection.detail and "not Ollama" in detection.detail
    assert "http.server" in detection.detail and str(not_ollama.pid) in detection.detail


# --- is_available ---------------------------------------------------------------------------------------------------


def test_available_from_the_running_server(session_for, standin, ref):
    server = standin(models=["qwen2.5:0.5b", "smollm2"])
    session = session_for(port=server.port)
    found = session.is_available(ref(session, "qwen2.5:0.5b"))
    assert found.present and found.revision and len(found.revision) == 64
    assert session.is_available(ref(session, "smollm2:latest")).present  # name and name:latest are one model
    assert session.is_available(ref(session, "SmolLM2")).present
    missing = session.is_available(ref(session, "qwen2.5:7b"))
    assert not missing.present
    assert missing.fix == "ollama pull qwen2.5:7b"
    assert server.url in missing.detail


def test_available_from_disk_when_the_server_is_down(session_for, models_dir, ref, fake_ollama):
    written = ollama_models.write_model(models_dir, "qwen2.5:0.5b")
    ollama_models.write_model(models_dir, "broken:1b", partial=True)
    session = session_for()
    found = session.is_available(ref(session, "qwen2.5:0.5b"))
    assert found.present and found.revision == written.digest
    assert "not running" in found.detail
    for name in ("broken:1b", "qwen2.5:7b"):
        missing = session.is_available(ref(session, name))
        assert not missing.present and missing.fix == f"ollama pull {name}"
        assert str(models_dir) in missing.detail
    assert session.state.records() == []  # nothing was started to answer


def test_available_from_ollama_models(session_for, tmp_path, ref, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    ollama_models.write_model(elsewhere, "llava:7b", vision=True)
    monkeypatch.setenv("OLLAMA_MODELS", str(elsewhere))
    session = session_for()
    assert session.is_available(ref(session, "llava:7b")).present


def test_available_from_the_default_folders(session_for, tmp_path, ref, monkeypatch):
    home = tmp_path / "home"
    ollama_models.write_model(home / ".ollama" / "models", "qwen2.5:0.5b")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    session = session_for(models_dir=None)
    assert session.context("ollama").settings.models_dir is None
    found = session.is_available(ref(session, "qwen2.5:0.5b"))
    assert found.present and str(home) in found.detail


def test_available_ignores_a_non_ollama_program_on_the_port(session_for, not_ollama, port, models_dir, ref):
    ollama_models.write_model(models_dir, "qwen2.5:0.5b")
    session = session_for(port=port)
    assert session.is_available(ref(session, "qwen2.5:0.5b")).present


# --- what the core reads besides presence: capabilities, memory, resident models ------------------------------------


def test_capabilities_and_size_from_the_server(session_for, standin, ref):
    server = standin(models=["qwen2.5:0.5b", {"name": "llava:7b", "vision": True}])
    session = session_for(port=server.port)
    vision = session.is_available(ref(session, "llava:7b"))
    assert vision.capabilities is not None and "vision" in vision.capabilities
    assert vision.memory_bytes and vision.memory_bytes > ollama_models.PROJECTOR_SIZE
    text = session.is_available(ref(session, "qwen2.5:0.5b"))
    assert text.capabilities is not None and "completion" in text.capabilities and "vision" not in text.capabilities


def test_capabilities_from_disk(session_for, models_dir, ref):
    ollama_models.write_model(models_dir, "llava:7b", vision=True)
    ollama_models.write_model(models_dir, "qwen2.5:0.5b")
    session = session_for()
    assert session.is_available(ref(session, "llava:7b")).capabilities == ("completion", "vision")
    text = session.is_available(ref(session, "qwen2.5:0.5b"))
    assert text.capabilities == ("completion",) and text.memory_bytes


def test_gguf_header_reading(models_dir):
    from jarvis_ollama import store

    spec = ollama_models.write_model(models_dir, "qwen2.5:0.5b", context_length=8192)
    meta = store.gguf_metadata(Path(spec.weights_file))
    expected = ollama_models.read_gguf_metadata(spec.weights_file)
    assert meta == {k: (None if isinstance(v, list) else v) for k, v in expected.items()}
    assert meta["qwen2.context_length"] == 8192
    not_gguf = models_dir / "plain.bin"
    not_gguf.write_bytes(b"hello world, not a model")
    assert store.gguf_metadata(not_gguf) is None


def test_detect_lists_the_resident_models(session_for, standin, ref):
    server = standin(models=["qwen2.5:0.5b", "smollm2:135m"])
    session = session_for(port=server.port)
    assert session.detect("ollama").loaded_models == {}
    session.warmup(ref(session, "smollm2:135m"))
    loaded = session.detect("ollama").loaded_models
    assert list(loaded) == ["smollm2:135m"] and loaded["smollm2:135m"] > 0
    assert session_for().detect("ollama").loaded_models is None  # nothing answers: unknown
